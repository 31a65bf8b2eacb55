-- Monthly statements (calendar months, UTC): stored once per account and period when the period has ended, so a
-- statement handed out never changes. The document is the JSON the API returns.
CREATE TABLE account_statements (
    account_id    text   NOT NULL REFERENCES accounts (id),
    period        text   NOT NULL,
    document      text   NOT NULL,
    generated_at  bigint NOT NULL,
    PRIMARY KEY (account_id, period)
);

-- Marketplace: agents published by creator accounts. Money is micro-USD; a per-token markup is in basis points.
CREATE TABLE marketplace_agents (
    id                     text    PRIMARY KEY,
    creator_account_id     text    NOT NULL REFERENCES accounts (id),
    name                   text    NOT NULL,
    pricing_mode           text    NOT NULL,
    price_micros           bigint  NOT NULL DEFAULT 0 CHECK (price_micros >= 0),
    markup_bps             bigint  NOT NULL DEFAULT 0 CHECK (markup_bps >= 0),
    creator_share_percent  bigint  NOT NULL CHECK (creator_share_percent BETWEEN 0 AND 100),
    created_at             bigint  NOT NULL
);
CREATE INDEX marketplace_agents_creator ON marketplace_agents (creator_account_id);

-- What accounts bought: a one_time agent once (period 'once'), a monthly agent per calendar month (yyyy-MM, UTC).
-- The ledger transfers (code agent_purchase, reference = agent id) are the money; this row is the access.
CREATE TABLE marketplace_purchases (
    account_id     text   NOT NULL REFERENCES accounts (id),
    agent_id       text   NOT NULL REFERENCES marketplace_agents (id),
    period         text   NOT NULL,
    amount_micros  bigint NOT NULL CHECK (amount_micros >= 0),
    created_at     bigint NOT NULL,
    PRIMARY KEY (account_id, agent_id, period)
);

-- Payouts of creator earnings (ledger transfer earnings → payouts clearing); the id is the idempotency key.
CREATE TABLE marketplace_payouts (
    creator_account_id  text   NOT NULL REFERENCES accounts (id),
    id                  text   NOT NULL,
    amount_micros       bigint NOT NULL CHECK (amount_micros > 0),
    transfer_id         text   NOT NULL,
    stripe_transfer_id  text,
    created_at          bigint NOT NULL,
    PRIMARY KEY (creator_account_id, id)
);
