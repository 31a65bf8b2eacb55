-- Billing accounts own a customer ledger account; API keys and admin keys are stored only as SHA-256 hashes.
CREATE TABLE accounts (
    id                 text   PRIMARY KEY,
    name               text   NOT NULL,
    ledger_account_id  bigint NOT NULL UNIQUE REFERENCES ledger_accounts (id),
    created_at         bigint NOT NULL
);

CREATE TABLE api_keys (
    id            text   PRIMARY KEY,
    account_id    text   NOT NULL REFERENCES accounts (id),
    name          text,
    prefix        text   NOT NULL,
    key_hash      blob  NOT NULL UNIQUE,
    type          text   NOT NULL DEFAULT 'standard',
    created_at    bigint NOT NULL,
    last_used_at  bigint,
    revoked_at    bigint
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE admin_keys (
    id          text   PRIMARY KEY,
    key_hash    blob  NOT NULL UNIQUE,
    created_at  bigint NOT NULL
);
