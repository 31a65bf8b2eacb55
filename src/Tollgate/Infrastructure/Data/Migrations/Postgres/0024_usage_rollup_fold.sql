-- Usage rollups on PostgreSQL are folded in the background (Features/Analytics/UsageRollupFolder) instead of by the
-- insert trigger of 0019. That trigger ran inside every ledger batch, on the single writer whose commit every gateway
-- call waits for, and cost about as much as the rest of the batch's inserts together.
--
-- Each record carries the id of the transaction that inserted it (fold_xid). The cursor's horizon splits the records:
-- those below it (or NULL: inserted while the trigger still existed) are in usage_rollups, those at or above it are not
-- yet. A fold moves the horizon up to the oldest transaction still running (pg_snapshot_xmin): every transaction below
-- that has finished, so the records it takes can no longer change under it. Readers add the records at or above the
-- horizon to the rollups, in one snapshot, so a summary is exact at any moment whether or not a fold has run.

-- First, so that inserters still running finish (with the trigger) before anything below is decided.
DROP TRIGGER usage_rollups_on_insert ON usage_records;

ALTER TABLE usage_records ADD COLUMN fold_xid xid8;
ALTER TABLE usage_records ALTER COLUMN fold_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX usage_records_fold ON usage_records (fold_xid);

CREATE TABLE usage_rollup_cursor (
    id      smallint PRIMARY KEY CHECK (id = 1),
    horizon xid8     NOT NULL
);
-- Every transaction that could still insert a record has an id at or above this.
INSERT INTO usage_rollup_cursor VALUES (1, pg_snapshot_xmin(pg_current_snapshot()));

-- Takes the finished records above the horizon into the rollups and moves the horizon. Returns the number of rollup
-- rows touched, or -1 when another fold (or a re-rate, see below) holds the cursor.
CREATE FUNCTION usage_rollups_fold() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    from_xid xid8;
    to_xid   xid8;
    touched  bigint;
BEGIN
    SELECT horizon INTO from_xid FROM usage_rollup_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN RETURN -1; END IF;
    to_xid := pg_snapshot_xmin(pg_current_snapshot());
    IF to_xid <= from_xid THEN RETURN 0; END IF;
    INSERT INTO usage_rollups AS u
    SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
           billing_status, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
           sum(reasoning_tokens), sum(coalesce(user_price_micros, 0)), sum(coalesce(provider_cost_micros, 0))
    FROM usage_records
    WHERE fold_xid >= from_xid AND fold_xid < to_xid
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
        requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens, cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
        user_price_micros = u.user_price_micros + excluded.user_price_micros,
        provider_cost_micros = u.provider_cost_micros + excluded.provider_cost_micros;
    GET DIAGNOSTICS touched = ROW_COUNT;
    UPDATE usage_rollup_cursor SET horizon = to_xid WHERE id = 1;
    RETURN touched;
END
$$;

-- Updates (re-rating) and deletes still adjust the rollups at once, but only for records already folded: the others
-- reach the rollups with their new values when they are folded. The cursor is read FOR SHARE so a fold cannot move
-- the horizon between this decision and this transaction's commit.
CREATE OR REPLACE FUNCTION usage_rollups_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    h xid8;
BEGIN
    SELECT horizon INTO h FROM usage_rollup_cursor WHERE id = 1 FOR SHARE;
    INSERT INTO usage_rollups AS u
    SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
           billing_status, sum(sign), sum(sign * input_tokens), sum(sign * output_tokens), sum(sign * cache_read_tokens),
           sum(sign * cache_write_tokens), sum(sign * reasoning_tokens), sum(sign * coalesce(user_price_micros, 0)),
           sum(sign * coalesce(provider_cost_micros, 0))
    FROM (SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1 AS sign, * FROM old_rows) changed
    WHERE fold_xid IS NULL OR fold_xid < h
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
        requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens, cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
        user_price_micros = u.user_price_micros + excluded.user_price_micros,
        provider_cost_micros = u.provider_cost_micros + excluded.provider_cost_micros;
    DELETE FROM usage_rollups WHERE requests = 0 AND (account_id, day) IN (SELECT account_id, occurred_at / 86400000000 FROM old_rows);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION usage_rollups_remove() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    h xid8;
BEGIN
    SELECT horizon INTO h FROM usage_rollup_cursor WHERE id = 1 FOR SHARE;
    UPDATE usage_rollups u SET
        requests = u.requests - o.requests, input_tokens = u.input_tokens - o.input_tokens, output_tokens = u.output_tokens - o.output_tokens,
        cache_read_tokens = u.cache_read_tokens - o.cache_read_tokens, cache_write_tokens = u.cache_write_tokens - o.cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens - o.reasoning_tokens, user_price_micros = u.user_price_micros - o.user_price_micros,
        provider_cost_micros = u.provider_cost_micros - o.provider_cost_micros
    FROM (SELECT account_id, occurred_at / 86400000000 AS day, model, coalesce(provider, '') AS provider, coalesce(key_id, '') AS key_id,
                 coalesce(customer_id, '') AS customer_id, billing_status, count(*) AS requests, sum(input_tokens) AS input_tokens,
                 sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                 sum(reasoning_tokens) AS reasoning_tokens, sum(coalesce(user_price_micros, 0)) AS user_price_micros,
                 sum(coalesce(provider_cost_micros, 0)) AS provider_cost_micros
          FROM old_rows WHERE fold_xid IS NULL OR fold_xid < h GROUP BY 1, 2, 3, 4, 5, 6, 7) o
    WHERE u.account_id = o.account_id AND u.day = o.day AND u.model = o.model AND u.provider = o.provider AND u.key_id = o.key_id
      AND u.customer_id = o.customer_id AND u.billing_status = o.billing_status;
    DELETE FROM usage_rollups WHERE requests = 0 AND (account_id, day) IN (SELECT account_id, occurred_at / 86400000000 FROM old_rows);
    RETURN NULL;
END
$$;
