-- Usage rollups (Features/Analytics): per account, UTC day, model, provider, key, end customer and billing status, the
-- count of usage records and the sums of their token counts and amounts. Summaries and margin reports read these
-- instead of scanning usage_records. Missing dimensions are stored as '' (a primary key column cannot be NULL).
-- day = occurred_at (Unix micros) / 86 400 000 000: days since 1970-01-01 UTC.
CREATE TABLE usage_rollups (
    account_id            text   NOT NULL,
    day                   bigint NOT NULL,
    model                 text   NOT NULL,
    provider              text   NOT NULL,
    key_id                text   NOT NULL,
    customer_id           text   NOT NULL,
    billing_status        text   NOT NULL,
    requests              bigint NOT NULL,
    input_tokens          bigint NOT NULL,
    output_tokens         bigint NOT NULL,
    cache_read_tokens     bigint NOT NULL,
    cache_write_tokens    bigint NOT NULL,
    reasoning_tokens      bigint NOT NULL,
    user_price_micros     bigint NOT NULL,
    provider_cost_micros  bigint NOT NULL,
    PRIMARY KEY (account_id, day, model, provider, key_id, customer_id, billing_status)
);
CREATE INDEX usage_rollups_day ON usage_rollups (day);

-- Kept by statement-level triggers, so every writer of usage_records (UsageStore batches, the ledger's group commit,
-- re-rating) adjusts the rollups in its own transaction with one grouped upsert per statement, not one per record.
-- Rows are locked in key order so two concurrent batches cannot deadlock on each other's rollup rows.
CREATE FUNCTION usage_rollups_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO usage_rollups AS u
        SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
               billing_status, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
               sum(reasoning_tokens), sum(coalesce(user_price_micros, 0)), sum(coalesce(provider_cost_micros, 0))
        FROM new_rows
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
            requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens,
            output_tokens = u.output_tokens + excluded.output_tokens, cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
            user_price_micros = u.user_price_micros + excluded.user_price_micros,
            provider_cost_micros = u.provider_cost_micros + excluded.provider_cost_micros;
    ELSE
        -- An update (a re-rate) moves a record between groups: take the old row out, put the new one in.
        INSERT INTO usage_rollups AS u
        SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
               billing_status, sum(sign), sum(sign * input_tokens), sum(sign * output_tokens), sum(sign * cache_read_tokens),
               sum(sign * cache_write_tokens), sum(sign * reasoning_tokens), sum(sign * coalesce(user_price_micros, 0)),
               sum(sign * coalesce(provider_cost_micros, 0))
        FROM (SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1 AS sign, * FROM old_rows) changed
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
            requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens,
            output_tokens = u.output_tokens + excluded.output_tokens, cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
            user_price_micros = u.user_price_micros + excluded.user_price_micros,
            provider_cost_micros = u.provider_cost_micros + excluded.provider_cost_micros;
        DELETE FROM usage_rollups WHERE requests = 0 AND (account_id, day) IN (SELECT account_id, occurred_at / 86400000000 FROM old_rows);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_rollups_on_insert AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_apply();
CREATE TRIGGER usage_rollups_on_update AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_apply();

-- Deleting records (no code does today; an operator purging data would) takes them out of the rollups too.
CREATE FUNCTION usage_rollups_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
          FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6, 7) o
    WHERE u.account_id = o.account_id AND u.day = o.day AND u.model = o.model AND u.provider = o.provider AND u.key_id = o.key_id
      AND u.customer_id = o.customer_id AND u.billing_status = o.billing_status;
    DELETE FROM usage_rollups WHERE requests = 0 AND (account_id, day) IN (SELECT account_id, occurred_at / 86400000000 FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER usage_rollups_on_delete AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_remove();

-- Existing records.
INSERT INTO usage_rollups
SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
       billing_status, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
       sum(reasoning_tokens), sum(coalesce(user_price_micros, 0)), sum(coalesce(provider_cost_micros, 0))
FROM usage_records
GROUP BY 1, 2, 3, 4, 5, 6, 7;

-- Filtered listings and exports walk an account's records by time; the ledger listing walks an account's entries.
CREATE INDEX usage_records_account_model ON usage_records (account_id, model, occurred_at DESC);
