-- PostgreSQL only (see Postgres/0031_usage_records_no_account_fk.sql).
SELECT 1;
