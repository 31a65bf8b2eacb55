-- PostgreSQL only (see Postgres/0032_ledger_write_checked.sql).
SELECT 1;
