-- Every usage record is written for an account its writer has just authenticated (an API key's account, or the
-- account a ledger charge in the same transaction belongs to), and accounts are never deleted. The foreign key only
-- repeated that check, at a price: a per-row trigger that locks the account row (FOR KEY SHARE), measured at about
-- 13 µs of server time per record on the 2-core benchmark machine, a quarter of the record's insert, paid inside
-- the ledger's single writer transaction that every gateway call waits for (docs/BENCHMARKS.md, session 11).
-- SQLite keeps its key: there the check costs next to nothing and dropping it would mean rebuilding the table.
ALTER TABLE usage_records DROP CONSTRAINT IF EXISTS usage_records_account_id_fkey;
