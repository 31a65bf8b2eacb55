-- Audit log (Features/Audit): one row per admin or account-admin change (who, what, target, before/after, outcome,
-- request id, source IP). Append-only: the application has no UPDATE or DELETE path, and the triggers below refuse
-- UPDATE, DELETE and TRUNCATE for every role that does not own the table's triggers (an owner could drop them; a
-- deployment that wants more grants the application role INSERT and SELECT only).
-- seq orders the log (newest first in the query API, and the pagination cursor); at is Unix micros (UTC).
CREATE TABLE audit_log (
    seq          bigserial PRIMARY KEY,
    id           text    NOT NULL UNIQUE,
    at           bigint  NOT NULL,
    actor_type   text    NOT NULL,
    actor_id     text    NOT NULL,
    account_id   text,
    action       text    NOT NULL,
    target_type  text,
    target_id    text,
    status       bigint  NOT NULL,
    before_json  text,
    after_json   text,
    request_id   text    NOT NULL,
    source_ip    text
);
CREATE INDEX audit_log_account ON audit_log (account_id, seq);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
