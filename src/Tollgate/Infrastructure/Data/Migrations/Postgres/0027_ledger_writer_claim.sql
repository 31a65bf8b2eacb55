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

-- Returns true when the caller holds the claim after this call (exclusive), false when it writes alongside others.
-- Raises TL002, aborting the caller's transaction, while another writer holds it; the caller waits and retries, and
-- the holder releases it at its next batch (it sees the refusal) or when it lapses.
CREATE FUNCTION ledger_claim(writer text, want_exclusive boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  c ledger_writer_claim;
  now_ts timestamptz := clock_timestamp();
  refusals bigint;
  contended boolean;
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
  END IF;
  IF want_exclusive AND NOT contended
     AND (c.contended_at IS NULL OR c.contended_at < now_ts - interval '10 seconds')
     AND (c.last_writer IS NULL OR c.last_writer = writer OR c.last_write_at < now_ts - interval '10 seconds') THEN
    c.holder := writer;
    c.held_until := now_ts + interval '1 second';
  ELSIF c.holder = writer THEN
    c.holder := NULL;
    c.held_until := NULL;
  END IF;
  UPDATE ledger_writer_claim SET holder = c.holder, held_until = c.held_until, last_writer = writer, last_write_at = now_ts,
    contended_at = c.contended_at, refusals_seen = c.refusals_seen WHERE id = 1;
  RETURN c.holder IS NOT DISTINCT FROM writer;
END
$$;
