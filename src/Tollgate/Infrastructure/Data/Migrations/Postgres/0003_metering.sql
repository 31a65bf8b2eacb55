-- One row per metered request. The id is the client's event id, unique within its account: re-sending an event is a
-- no-op (INSERT … ON CONFLICT DO NOTHING). Amounts are micro-USD (bigint); provider_cost_usd keeps the provider's
-- exact decimal text as reported. Timestamps are micro-seconds since the Unix epoch, like the ledger.
CREATE TABLE usage_records (
    account_id            text   NOT NULL REFERENCES accounts (id),
    id                    text   NOT NULL,
    key_id                text,
    model                 text   NOT NULL,
    provider              text,
    input_tokens          bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens         bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_read_tokens     bigint NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cache_write_tokens    bigint NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    reasoning_tokens      bigint NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    provider_cost_micros  bigint,
    provider_cost_usd     text,
    user_price_micros     bigint,
    billing_status        text   NOT NULL CHECK (billing_status IN ('billed', 'internal', 'byok', 'needs_review')),
    request_id            text,
    metadata              text,
    transfer_id           text,
    created_at            bigint NOT NULL,
    occurred_at           bigint NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX usage_records_account_occurred ON usage_records (account_id, occurred_at DESC, id DESC);
CREATE INDEX usage_records_needs_review ON usage_records (billing_status) WHERE billing_status = 'needs_review';
