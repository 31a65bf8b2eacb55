-- The ledger writer's claim (Features/Ledger/PostgresLedgerStore.cs, "Exclusive writer"). A writer that is the only one
-- writing the ledger holds the claim for one second at a time, renewed by each of its batches; while it holds it, no
-- other writer commits a batch, so the state it cached is exact and it may acknowledge a gateway hold before the batch
-- that writes it reaches the database. Every writer's every batch calls ledger_claim first (the row lock orders them).
--   holder / held_until     who holds the claim, until when (database clock)
--   last_writer / last_write_at   the last writer to commit a batch: a claim is granted only after 10 s without another writer
--   contended_at / refusals_seen  the last time a writer was refused, seen through the refusals sequence (nextval
--                                 survives the refused transaction's rollback, an UPDATE would not)
CREATE TABLE ledger_writer_claim (
  id smallint PRIMARY KEY CHECK (id = 1),
  holder text,
  held_until timestamptz,
  last_writer text,
  last_write_at timestamptz,
  contended_at timestamptz,
  refusals_seen bigint NOT NULL DEFAULT 0
);
INSERT INTO ledger_writer_claim (id) VALUES (1);
CREATE SEQUENCE ledger_claim_refusals;

-- Returns how many milliseconds the caller still holds the claim for after this call (> 0: exclusive), or 0 when it
-- writes alongside others. Raises TL002, aborting the caller's transaction, while another writer holds it; the
-- caller waits and retries, and the holder releases it at its next batch (it sees the refusal) or when it lapses.
-- The row is rewritten only when something changes (a renewal due within 0.5 s, another writer, a refusal seen, a
-- last write older than a second): most batches of a busy writer only lock it.
CREATE FUNCTION ledger_claim(writer text, want_exclusive boolean) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  c ledger_writer_claim;
  now_ts timestamptz := clock_timestamp();
  refusals bigint;
  contended boolean;
  changed boolean := false;
BEGIN
  SELECT * INTO c FROM ledger_writer_claim WHERE id = 1 FOR UPDATE;
  IF c.holder IS NOT NULL AND c.holder <> writer AND c.held_until > now_ts THEN
    PERFORM nextval('ledger_claim_refusals');
    RAISE EXCEPTION 'another ledger writer holds the claim until %', c.held_until USING ERRCODE = 'TL002';
  END IF;
  -- A function, not a scan of the sequence: the writer's sessions plan with sequential scans off.
  refusals := coalesce(pg_sequence_last_value('ledger_claim_refusals'), 0);
  contended := refusals > c.refusals_seen;
  IF contended THEN
    c.contended_at := now_ts;
    c.refusals_seen := refusals;
    changed := true;
  END IF;
  IF want_exclusive AND NOT contended
     AND (c.contended_at IS NULL OR c.contended_at < now_ts - interval '10 seconds')
     AND (c.last_writer IS NULL OR c.last_writer = writer OR c.last_write_at < now_ts - interval '10 seconds') THEN
    IF c.holder IS DISTINCT FROM writer OR c.held_until < now_ts + interval '500 milliseconds' THEN
      c.holder := writer;
      c.held_until := now_ts + interval '1 second';
      changed := true;
    END IF;
  ELSIF c.holder IS NOT NULL THEN
    -- Ours (another's would have raised above unless lapsed): let go. A lapsed one is cleared too.
    c.holder := NULL;
    c.held_until := NULL;
    changed := true;
  END IF;
  IF c.last_writer IS DISTINCT FROM writer OR c.last_write_at < now_ts - interval '1 second' THEN
    c.last_writer := writer;
    c.last_write_at := now_ts;
    changed := true;
  END IF;
  IF changed THEN
    UPDATE ledger_writer_claim SET holder = c.holder, held_until = c.held_until, last_writer = c.last_writer,
      last_write_at = c.last_write_at, contended_at = c.contended_at, refusals_seen = c.refusals_seen WHERE id = 1;
  END IF;
  IF c.holder IS DISTINCT FROM writer THEN
    RETURN 0;
  END IF;
  RETURN greatest(0, floor(extract(epoch FROM c.held_until - now_ts) * 1000))::integer;
END
$$;

-- The speculative batch's first statement: the claim, then ledger_expect_state (migration 0026), in one call.
CREATE FUNCTION ledger_claim_and_expect(writer text, ids bigint[], versions bigint[], limits bigint[],
  debits_pending bigint[], debits_posted bigint[], credits_pending bigint[], credits_posted bigint[], absent text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  held integer;
BEGIN
  held := ledger_claim(writer, true);
  PERFORM ledger_expect_state(ids, versions, limits, debits_pending, debits_posted, credits_pending, credits_posted, absent);
  RETURN held;
END
$$;
