-- A speculative or deferred ledger write (PostgresLedgerStore.WriteChecked) as ONE statement in an implicit
-- transaction, instead of a batch of eight (BEGIN, the claim and state check, four writes, the usage records, COMMIT).
-- The reason is the client: Npgsql writes every statement of a batch after the first asynchronously, even in a
-- synchronous call (against a send/receive deadlock), so each batch round trip of the writer's thread costs two
-- thread-pool work items and the thread wake-ups they take; a single statement is written and read synchronously on the
-- writer's own thread (measured: 2.00 against 0.04 work items and 0.13 against 0.035 ms per round trip of trivial
-- statements; docs/BENCHMARKS.md, session 11). The statements run here in the same order as in the batch; an
-- exception (TL001/TL003 from the state check) aborts the whole implicit transaction, as it aborted the batch's.
-- p_relaxed: the caller needs the result but not its durability (holds only), as SET LOCAL synchronous_commit = off did.
CREATE FUNCTION ledger_write_checked(
  p_writer text, p_ask_claim boolean, p_keep_held boolean, p_relaxed boolean,
  c_ids bigint[], c_versions bigint[], c_limits bigint[], c_dp bigint[], c_dpo bigint[], c_cp bigint[], c_cpo bigint[], c_absent text[],
  t_id text[], t_kind smallint[], t_dr bigint[], t_cr bigint[], t_amount bigint[], t_pending text[], t_timeout integer[],
  t_expires bigint[], t_status smallint[], t_code text[], t_ref text[], t_descr text[], t_meta text[], t_ts bigint[],
  t_drb bigint[], t_crb bigint[],
  e_account bigint[], e_version bigint[], e_transfer text[], e_debit boolean[], e_pd bigint[], e_po bigint[], e_bal bigint[],
  e_dpa bigint[], e_cpa bigint[], e_ts bigint[],
  a_id bigint[], a_dp bigint[], a_dpo bigint[], a_cp bigint[], a_cpo bigint[], a_v bigint[],
  s_id text[], s_status smallint[],
  u_id text[], u_account_id text[], u_key_id text[], u_model text[], u_provider text[], u_input_tokens bigint[],
  u_output_tokens bigint[], u_cache_read_tokens bigint[], u_cache_write_tokens bigint[], u_reasoning_tokens bigint[],
  u_provider_cost_micros bigint[], u_provider_cost_usd text[], u_user_price_micros bigint[], u_billing_status text[],
  u_request_id text[], u_metadata text[], u_transfer_id text[], u_created_at bigint[], u_occurred_at bigint[], u_customer_id text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  held integer;
BEGIN
  IF p_relaxed THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  IF p_ask_claim THEN
    held := ledger_claim_and_expect(p_writer, c_ids, c_versions, c_limits, c_dp, c_dpo, c_cp, c_cpo, c_absent, p_keep_held);
  ELSE
    PERFORM ledger_expect_state(c_ids, c_versions, c_limits, c_dp, c_dpo, c_cp, c_cpo, c_absent);
  END IF;
  IF cardinality(t_id) > 0 THEN
    INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds,
        expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after)
    SELECT * FROM unnest(t_id, t_kind, t_dr, t_cr, t_amount, t_pending, t_timeout, t_expires, t_status, t_code, t_ref,
        t_descr, t_meta, t_ts, t_drb, t_crb);
  END IF;
  IF cardinality(e_account) > 0 THEN
    INSERT INTO ledger_entries (account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after,
        debits_pending_after, credits_pending_after, ts)
    SELECT * FROM unnest(e_account, e_version, e_transfer, e_debit, e_pd, e_po, e_bal, e_dpa, e_cpa, e_ts);
  END IF;
  IF cardinality(a_id) > 0 THEN
    UPDATE ledger_accounts a
    SET debits_pending = u.dp, debits_posted = u.dpo, credits_pending = u.cp, credits_posted = u.cpo, version = u.v
    FROM unnest(a_id, a_dp, a_dpo, a_cp, a_cpo, a_v) AS u(id, dp, dpo, cp, cpo, v)
    WHERE a.id = u.id;
  END IF;
  IF cardinality(s_id) > 0 THEN
    UPDATE ledger_transfers t SET status = u.s
    FROM unnest(s_id, s_status) AS u(id, s)
    WHERE t.id = u.id;
  END IF;
  IF cardinality(u_id) > 0 THEN
    INSERT INTO usage_records (id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status,
        request_id, metadata, transfer_id, created_at, occurred_at, customer_id)
    SELECT * FROM unnest(u_id, u_account_id, u_key_id, u_model, u_provider, u_input_tokens, u_output_tokens,
        u_cache_read_tokens, u_cache_write_tokens, u_reasoning_tokens, u_provider_cost_micros, u_provider_cost_usd,
        u_user_price_micros, u_billing_status, u_request_id, u_metadata, u_transfer_id, u_created_at, u_occurred_at,
        u_customer_id)
    ON CONFLICT (account_id, id) DO NOTHING;
  END IF;
  RETURN held;
END
$$;
