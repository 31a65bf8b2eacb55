-- Usage rollups (Features/Analytics): per account, UTC day, model, provider, key, end customer and billing status, the
-- count of usage records and the sums of their token counts and amounts. Summaries and margin reports read these
-- instead of scanning usage_records. Missing dimensions are stored as '' (a primary key column cannot be NULL).
-- day = occurred_at (Unix micros) / 86 400 000 000: days since 1970-01-01 UTC.
CREATE TABLE usage_rollups (
    account_id            text    NOT NULL,
    day                   integer NOT NULL,
    model                 text    NOT NULL,
    provider              text    NOT NULL,
    key_id                text    NOT NULL,
    customer_id           text    NOT NULL,
    billing_status        text    NOT NULL,
    requests              integer NOT NULL,
    input_tokens          integer NOT NULL,
    output_tokens         integer NOT NULL,
    cache_read_tokens     integer NOT NULL,
    cache_write_tokens    integer NOT NULL,
    reasoning_tokens      integer NOT NULL,
    user_price_micros     integer NOT NULL,
    provider_cost_micros  integer NOT NULL,
    PRIMARY KEY (account_id, day, model, provider, key_id, customer_id, billing_status)
) WITHOUT ROWID;
CREATE INDEX usage_rollups_day ON usage_rollups (day);

-- Kept by triggers, so every writer of usage_records (UsageStore batches, the ledger's group commit, re-rating)
-- adjusts the rollups in its own transaction.
CREATE TRIGGER usage_rollups_on_insert AFTER INSERT ON usage_records BEGIN
    INSERT INTO usage_rollups VALUES (NEW.account_id, NEW.occurred_at / 86400000000, NEW.model, coalesce(NEW.provider, ''),
        coalesce(NEW.key_id, ''), coalesce(NEW.customer_id, ''), NEW.billing_status, 1, NEW.input_tokens, NEW.output_tokens,
        NEW.cache_read_tokens, NEW.cache_write_tokens, NEW.reasoning_tokens, coalesce(NEW.user_price_micros, 0),
        coalesce(NEW.provider_cost_micros, 0))
    ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
        requests = requests + 1, input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, user_price_micros = user_price_micros + excluded.user_price_micros,
        provider_cost_micros = provider_cost_micros + excluded.provider_cost_micros;
END;

-- An update (a re-rate) moves a record between groups: take the old row out, put the new one in.
CREATE TRIGGER usage_rollups_on_update AFTER UPDATE ON usage_records BEGIN
    UPDATE usage_rollups SET requests = requests - 1, input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens, cache_read_tokens = cache_read_tokens - OLD.cache_read_tokens,
        cache_write_tokens = cache_write_tokens - OLD.cache_write_tokens, reasoning_tokens = reasoning_tokens - OLD.reasoning_tokens,
        user_price_micros = user_price_micros - coalesce(OLD.user_price_micros, 0),
        provider_cost_micros = provider_cost_micros - coalesce(OLD.provider_cost_micros, 0)
    WHERE account_id = OLD.account_id AND day = OLD.occurred_at / 86400000000 AND model = OLD.model AND provider = coalesce(OLD.provider, '')
      AND key_id = coalesce(OLD.key_id, '') AND customer_id = coalesce(OLD.customer_id, '') AND billing_status = OLD.billing_status;
    DELETE FROM usage_rollups
    WHERE requests = 0 AND account_id = OLD.account_id AND day = OLD.occurred_at / 86400000000 AND model = OLD.model
      AND provider = coalesce(OLD.provider, '') AND key_id = coalesce(OLD.key_id, '') AND customer_id = coalesce(OLD.customer_id, '')
      AND billing_status = OLD.billing_status;
    INSERT INTO usage_rollups VALUES (NEW.account_id, NEW.occurred_at / 86400000000, NEW.model, coalesce(NEW.provider, ''),
        coalesce(NEW.key_id, ''), coalesce(NEW.customer_id, ''), NEW.billing_status, 1, NEW.input_tokens, NEW.output_tokens,
        NEW.cache_read_tokens, NEW.cache_write_tokens, NEW.reasoning_tokens, coalesce(NEW.user_price_micros, 0),
        coalesce(NEW.provider_cost_micros, 0))
    ON CONFLICT (account_id, day, model, provider, key_id, customer_id, billing_status) DO UPDATE SET
        requests = requests + 1, input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, user_price_micros = user_price_micros + excluded.user_price_micros,
        provider_cost_micros = provider_cost_micros + excluded.provider_cost_micros;
END;

-- Deleting records (no code does today; an operator purging data would) takes them out of the rollups too.
CREATE TRIGGER usage_rollups_on_delete AFTER DELETE ON usage_records BEGIN
    UPDATE usage_rollups SET requests = requests - 1, input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens, cache_read_tokens = cache_read_tokens - OLD.cache_read_tokens,
        cache_write_tokens = cache_write_tokens - OLD.cache_write_tokens, reasoning_tokens = reasoning_tokens - OLD.reasoning_tokens,
        user_price_micros = user_price_micros - coalesce(OLD.user_price_micros, 0),
        provider_cost_micros = provider_cost_micros - coalesce(OLD.provider_cost_micros, 0)
    WHERE account_id = OLD.account_id AND day = OLD.occurred_at / 86400000000 AND model = OLD.model AND provider = coalesce(OLD.provider, '')
      AND key_id = coalesce(OLD.key_id, '') AND customer_id = coalesce(OLD.customer_id, '') AND billing_status = OLD.billing_status;
    DELETE FROM usage_rollups
    WHERE requests = 0 AND account_id = OLD.account_id AND day = OLD.occurred_at / 86400000000 AND model = OLD.model
      AND provider = coalesce(OLD.provider, '') AND key_id = coalesce(OLD.key_id, '') AND customer_id = coalesce(OLD.customer_id, '')
      AND billing_status = OLD.billing_status;
END;

-- Existing records.
INSERT INTO usage_rollups
SELECT account_id, occurred_at / 86400000000, model, coalesce(provider, ''), coalesce(key_id, ''), coalesce(customer_id, ''),
       billing_status, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
       sum(reasoning_tokens), sum(coalesce(user_price_micros, 0)), sum(coalesce(provider_cost_micros, 0))
FROM usage_records
GROUP BY 1, 2, 3, 4, 5, 6, 7;

CREATE INDEX usage_records_account_model ON usage_records (account_id, model, occurred_at DESC);
