-- PostgreSQL only (see Postgres/0027_ledger_writer_claim.sql): SQLite's ledger writer commits in-process, so it never
-- acknowledges a hold before its batch is written.
SELECT 1;
