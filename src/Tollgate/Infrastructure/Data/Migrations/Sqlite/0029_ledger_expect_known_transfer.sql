-- PostgreSQL only (see Postgres/0029_ledger_expect_known_transfer.sql).
SELECT 1;
