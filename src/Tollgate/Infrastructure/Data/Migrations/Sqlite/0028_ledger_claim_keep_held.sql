-- PostgreSQL only (see Postgres/0028_ledger_claim_keep_held.sql): SQLite's ledger writer has no claim.
SELECT 1;
