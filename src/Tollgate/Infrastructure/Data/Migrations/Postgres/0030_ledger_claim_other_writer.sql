-- The writer claim is meant for a writer alone on the ledger: "granted only after 10 s without another writer"
-- (0027). ledger_claim checked only the single last writer, so of two writers taking turns without ever being refused
-- (the claim had lapsed when the second one started), whichever wrote twice in a row was granted the claim and the
-- other was then refused and stalled. other_write_at is the latest moment a writer other than last_writer may have
-- written: set when the last writer changes, to the previous writer's last write (last_write_at is renewed only once
-- a second, so up to a second later). The claim is granted only when that is more than 10 s ago.
ALTER TABLE ledger_writer_claim ADD COLUMN other_write_at timestamptz;

CREATE OR REPLACE FUNCTION ledger_claim(writer text, want_exclusive boolean, keep_held boolean DEFAULT false) RETURNS integer
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
  IF c.last_writer IS DISTINCT FROM writer THEN
    IF c.last_writer IS NOT NULL THEN
      -- Another writer wrote last: this one is not alone until 10 s after that writer's last write.
      c.other_write_at := least(now_ts, c.last_write_at + interval '1 second');
    END IF;
    c.last_writer := writer;
    c.last_write_at := now_ts;
    changed := true;
  ELSIF c.last_write_at < now_ts - interval '1 second' THEN
    c.last_write_at := now_ts;
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
     AND (c.other_write_at IS NULL OR c.other_write_at < now_ts - interval '10 seconds') THEN
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
  IF changed THEN
    UPDATE ledger_writer_claim SET holder = c.holder, held_until = c.held_until, last_writer = c.last_writer,
      last_write_at = c.last_write_at, contended_at = c.contended_at, refusals_seen = c.refusals_seen,
      other_write_at = c.other_write_at WHERE id = 1;
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
