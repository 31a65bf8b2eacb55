-- PostgreSQL only (see Postgres/0026_ledger_expect_state.sql): SQLite's ledger writer is in-process and reads its state
-- without a network round trip, so it does not speculate.
SELECT 1;
