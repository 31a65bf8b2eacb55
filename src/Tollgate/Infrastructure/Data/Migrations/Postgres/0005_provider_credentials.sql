-- Bring-your-own-key: a customer's own provider API key per account and provider, encrypted with ASP.NET Core Data
-- Protection (ciphertext only; never returned), with its last four characters for recognition.
CREATE TABLE provider_credentials (
    account_id  text   NOT NULL REFERENCES accounts (id),
    provider    text   NOT NULL,
    ciphertext  text   NOT NULL,
    last4       text   NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (account_id, provider)
);

-- The Data Protection key ring, shared by every process on this database (so any process can decrypt what another
-- encrypted). Rows are the XML elements Data Protection writes; they are never updated, only added.
CREATE TABLE data_protection_keys (
    name        text   PRIMARY KEY,
    xml         text   NOT NULL,
    created_at  bigint NOT NULL
);
