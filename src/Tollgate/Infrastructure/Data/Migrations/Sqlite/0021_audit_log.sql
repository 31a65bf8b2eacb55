-- Audit log (Features/Audit): one row per admin or account-admin change (who, what, target, before/after, outcome,
-- request id, source IP). Append-only: the application has no UPDATE or DELETE path, and these triggers refuse both.
-- seq orders the log (newest first in the query API, and the pagination cursor); at is Unix micros (UTC).
CREATE TABLE audit_log (
    seq          integer PRIMARY KEY AUTOINCREMENT,
    id           text    NOT NULL UNIQUE,
    at           integer NOT NULL,
    actor_type   text    NOT NULL,
    actor_id     text    NOT NULL,
    account_id   text,
    action       text    NOT NULL,
    target_type  text,
    target_id    text,
    status       integer NOT NULL,
    before_json  text,
    after_json   text,
    request_id   text    NOT NULL,
    source_ip    text
);
CREATE INDEX audit_log_account ON audit_log (account_id, seq);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
