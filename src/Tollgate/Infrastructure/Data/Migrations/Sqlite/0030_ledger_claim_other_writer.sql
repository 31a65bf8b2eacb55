-- PostgreSQL only (see Postgres/0030_ledger_claim_other_writer.sql).
SELECT 1;
