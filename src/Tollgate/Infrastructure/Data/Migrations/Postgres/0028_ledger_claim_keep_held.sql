-- Deferred ledger writes (Features/Ledger/PostgresLedgerStore.Deferred.cs): under the claim the writer acknowledges
-- holds and queues their writes behind the one in flight. If another writer asks for the claim meanwhile, the holder
-- must not let go before those queued writes are in, or the other writer could change the accounts they were
-- applied to. ledger_claim gains keep_held: a holder that passes it keeps (and renews) the claim even when contended,
-- and is told so by a negative result; it then stops deferring, writes what it queued (still passing keep_held), and
-- lets go at its next ordinary batch, which calls ledger_claim without it. The functions are replaced, not overloaded
-- (a two-argument call must stay unambiguous).
DROP FUNCTION ledger_claim_and_expect(text, bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], text[]);
DROP FUNCTION ledger_claim(text, boolean);

CREATE FUNCTION ledger_claim(writer text, want_exclusive boolean, keep_held boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  c ledger_writer_claim;
  now_ts timestamptz := clock_timestamp();
  refusals bigint;
  contended boolean;
  changed boolean := false;
  kept boolean := false;
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
  IF keep_held AND c.holder = writer AND c.held_until > now_ts
     AND (contended OR c.contended_at >= now_ts - interval '10 seconds') THEN
    -- Wanted by another writer, but the holder still has acknowledged holds to write: kept (and renewed) until it has.
    kept := true;
    IF c.held_until < now_ts + interval '500 milliseconds' THEN
      c.held_until := now_ts + interval '1 second';
      changed := true;
    END IF;
  ELSIF want_exclusive AND NOT contended
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
  IF kept THEN
    -- Negative: still held for that long, but the holder must stop taking on more and let go at its next plain call.
    RETURN -greatest(1, floor(extract(epoch FROM c.held_until - now_ts) * 1000))::integer;
  END IF;
  RETURN greatest(0, floor(extract(epoch FROM c.held_until - now_ts) * 1000))::integer;
END
$$;

-- The speculative batch's first statement: the claim, then ledger_expect_state (migration 0026), in one call.
CREATE FUNCTION ledger_claim_and_expect(writer text, ids bigint[], versions bigint[], limits bigint[],
  debits_pending bigint[], debits_posted bigint[], credits_pending bigint[], credits_posted bigint[], absent text[],
  keep_held boolean DEFAULT false)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  held integer;
BEGIN
  held := ledger_claim(writer, true, keep_held);
  PERFORM ledger_expect_state(ids, versions, limits, debits_pending, debits_posted, credits_pending, credits_posted, absent);
  RETURN held;
END
$$;
