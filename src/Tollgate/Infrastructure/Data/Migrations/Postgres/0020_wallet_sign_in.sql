-- Wallet sign-in to the dashboard (Features/Dashboard/WalletSignIn.cs), Sign-In with Ethereum (ERC-4361).

-- Nonces issued before sign-in (so to no account): single use, short-lived, pruned a day after expiry.
CREATE TABLE signin_nonces (
    nonce       text   PRIMARY KEY,
    domain      text   NOT NULL,
    uri         text   NOT NULL,
    issued_at   bigint NOT NULL,
    expires_at  bigint NOT NULL,
    used_at     bigint
);
CREATE INDEX signin_nonces_expiry ON signin_nonces (expires_at);

-- The user a wallet signs in as (created at its first wallet sign-in; it has no usable password). Addresses lower case.
CREATE TABLE wallet_users (
    address     text   PRIMARY KEY,
    user_id     text   NOT NULL UNIQUE REFERENCES users (id),
    created_at  bigint NOT NULL
);
