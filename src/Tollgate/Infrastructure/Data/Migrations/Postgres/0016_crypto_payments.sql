-- USDC top-ups (Features/Payments/Crypto). Addresses and hashes are stored lower case ("0x" + hex); times are Unix micros.

-- Sign-In with Ethereum nonces: issued to an account for one wallet link, single use, short-lived.
CREATE TABLE wallet_nonces (
    nonce       text   PRIMARY KEY,
    account_id  text   NOT NULL REFERENCES accounts (id),
    domain      text   NOT NULL,
    uri         text   NOT NULL,
    issued_at   bigint NOT NULL,
    expires_at  bigint NOT NULL,
    used_at     bigint
);
CREATE INDEX wallet_nonces_expiry ON wallet_nonces (expires_at);

-- A wallet proven (by a SIWE signature) to belong to an account; one account per wallet.
CREATE TABLE wallets (
    address     text   PRIMARY KEY,
    account_id  text   NOT NULL REFERENCES accounts (id),
    chain_id    bigint NOT NULL,
    linked_at   bigint NOT NULL
);
CREATE INDEX wallets_account ON wallets (account_id);

-- A transaction hash submitted for confirmation: the first account to claim it owns it; pending until credited or failed.
CREATE TABLE crypto_claims (
    chain_id      bigint NOT NULL,
    tx_hash       text   NOT NULL,
    account_id    text   NOT NULL REFERENCES accounts (id),
    status        text   NOT NULL CHECK (status IN ('pending', 'credited', 'failed')),
    reason        text,
    block_number  bigint,
    block_hash    text,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    PRIMARY KEY (chain_id, tx_hash)
);
CREATE INDEX crypto_claims_status ON crypto_claims (chain_id, status);

-- One token transfer to the treasury (a log of a transaction): credited exactly once, through the ledger transfer
-- transfer_id (derived from chain, hash and log index), or listed as unmatched (from an unlinked wallet, too small).
CREATE TABLE crypto_payments (
    chain_id       bigint NOT NULL,
    tx_hash        text   NOT NULL,
    log_index      bigint NOT NULL,
    account_id     text   REFERENCES accounts (id),
    status         text   NOT NULL CHECK (status IN ('credited', 'unmatched')),
    reason         text,
    token          text   NOT NULL,
    from_address   text   NOT NULL,
    to_address     text   NOT NULL,
    amount_units   bigint NOT NULL,
    credit_micros  bigint,
    transfer_id    text,
    block_number   bigint NOT NULL,
    block_hash     text   NOT NULL,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL,
    PRIMARY KEY (chain_id, tx_hash, log_index)
);
CREATE INDEX crypto_payments_account ON crypto_payments (account_id, created_at);
CREATE INDEX crypto_payments_status ON crypto_payments (chain_id, status, created_at);

-- The watcher's cursor per (chain, token, treasury): the next block to scan for Transfer logs.
CREATE TABLE crypto_scan_cursors (
    scope       text   PRIMARY KEY,
    next_block  bigint NOT NULL,
    updated_at  bigint NOT NULL
);
