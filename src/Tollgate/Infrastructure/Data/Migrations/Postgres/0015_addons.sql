-- Add-ons bought by accounts (e.g. an extra deploy slot): each purchase is paid by one ledger transfer and raises a
-- counted entitlement's limit above the plan's. The purchase id is the client's idempotency key.
CREATE TABLE addon_purchases (
    account_id     text   NOT NULL REFERENCES accounts (id),
    id             text   NOT NULL,
    addon_id       text   NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    feature        text   NOT NULL,
    units          bigint NOT NULL CHECK (units > 0),
    amount_micros  bigint NOT NULL CHECK (amount_micros >= 0),
    transfer_id    text,
    created_at     bigint NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX addon_purchases_feature ON addon_purchases (account_id, feature);
