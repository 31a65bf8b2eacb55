-- ledger_expect_state (migration 0026) told two different things apart by the same SQLSTATE. An account that differs
-- from the writer's cache means someone else wrote it (TL001: under the writer claim, a write that bypassed the claim).
-- A transfer id the batch takes as new that exists already is only a replay the cache did not know (a retry of a
-- transfer written before this process started, or one the cache let go of): TL003, applied again from the database
-- like any stale batch, but no sign of another writer.
CREATE OR REPLACE FUNCTION ledger_expect_state(ids bigint[], versions bigint[], limits bigint[], debits_pending bigint[],
  debits_posted bigint[], credits_pending bigint[], credits_posted bigint[], absent text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  matched integer := 0;
  at integer;
  r record;
BEGIN
  FOR r IN SELECT a.id, a.version, a.credit_limit, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
           FROM ledger_accounts a WHERE a.id = ANY(ids) ORDER BY a.id FOR UPDATE LOOP
    at := array_position(ids, r.id);
    IF versions[at] = r.version AND limits[at] = r.credit_limit
       AND debits_pending[at] = r.debits_pending AND debits_posted[at] = r.debits_posted
       AND credits_pending[at] = r.credits_pending AND credits_posted[at] = r.credits_posted THEN
      matched := matched + 1;
    END IF;
  END LOOP;
  IF matched <> cardinality(ids) THEN
    RAISE EXCEPTION 'ledger accounts changed since the batch was prepared' USING ERRCODE = 'TL001';
  END IF;
  IF cardinality(absent) > 0 AND EXISTS (SELECT 1 FROM ledger_transfers WHERE id = ANY(absent)) THEN
    RAISE EXCEPTION 'a transfer the batch treats as new already exists' USING ERRCODE = 'TL003';
  END IF;
END
$$;
