-- PostgreSQL now folds usage rollups in the background (see Postgres/0024_usage_rollup_fold.sql). SQLite keeps the
-- triggers of 0019: its single writer commits without a network round trip, and the row triggers cost little there.
SELECT 1;
