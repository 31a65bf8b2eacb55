-- Price overrides made through the admin API (/admin/v1/pricing/models/…): one row per Tollgate model id
-- 'provider/model'. spec is the override as snake_case JSON (the fields of Tollgate:Pricing:Models:…); decimals are
-- kept as JSON number text, so nothing is rounded. They take precedence over configuration and the catalog.
CREATE TABLE price_overrides (
    model_id    text   PRIMARY KEY,
    spec        text   NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL
);

-- Bumped in the same transaction as every change to price_overrides: each process polls this one row and rebuilds
-- its price snapshot when the number moves (a delete leaves no row behind to notice otherwise).
CREATE TABLE price_overrides_version (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  bigint  NOT NULL
);
INSERT INTO price_overrides_version (id, version) VALUES (1, 0);

-- The operator's re-rating queue: needs_review records across accounts, oldest first.
DROP INDEX usage_records_needs_review;
CREATE INDEX usage_records_review_queue ON usage_records (occurred_at, account_id, id) WHERE billing_status = 'needs_review';
