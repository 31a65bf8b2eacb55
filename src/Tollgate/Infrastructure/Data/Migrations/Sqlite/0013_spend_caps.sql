-- Spend caps in micro-USD per UTC day, UTC calendar month or in total, on an account, on a key (its lineage: a
-- rotated key keeps its predecessor's caps and what it spent) or on an end customer. The spending itself is counted
-- in the ledger (one bounded "spend_cap" ledger account per cap and window), so it is exact under concurrency.
CREATE TABLE spend_caps (
    account_id    text   NOT NULL REFERENCES accounts (id),
    scope         text   NOT NULL CHECK (scope IN ('account', 'key', 'customer')),
    subject_id    text   NOT NULL,
    cap_window    text   NOT NULL CHECK (cap_window IN ('day', 'month', 'total')),
    limit_micros  bigint NOT NULL CHECK (limit_micros >= 0),
    updated_at    bigint NOT NULL,
    PRIMARY KEY (account_id, scope, subject_id, cap_window)
);

-- The end customers of an account (the users of the product it sells), named per request or bound to a key.
CREATE TABLE end_customers (
    account_id  text   NOT NULL REFERENCES accounts (id),
    id          text   NOT NULL,
    name        text,
    blocked_at  bigint,
    metadata    text,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (account_id, id)
);

-- A key bound to an end customer charges every call to that customer; lineage_id is the first key of a rotation chain.
ALTER TABLE api_keys ADD COLUMN customer_id text;
ALTER TABLE api_keys ADD COLUMN lineage_id text;

ALTER TABLE usage_records ADD COLUMN customer_id text;
