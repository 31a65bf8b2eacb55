-- Counted entitlements of an account (projects, deploy slots, …): how many are in use now. Changed only together with
-- an entitlement_events row (same transaction), whose id is the client's idempotency key.
CREATE TABLE entitlement_usage (
    account_id  text   NOT NULL REFERENCES accounts (id),
    feature     text   NOT NULL,
    used        bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (account_id, feature)
);

CREATE TABLE entitlement_events (
    account_id  text   NOT NULL REFERENCES accounts (id),
    id          text   NOT NULL,
    feature     text   NOT NULL,
    quantity    bigint NOT NULL,
    used_after  bigint NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (account_id, id)
);
