-- Shared gateway rate limits exist only on PostgreSQL (several processes on one database); a SQLite file is served
-- by one process, whose in-process limiter is exact. Kept so both engines number their migrations alike.
SELECT 1;
