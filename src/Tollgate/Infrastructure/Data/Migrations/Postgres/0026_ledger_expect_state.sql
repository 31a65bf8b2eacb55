-- Speculative ledger batches (Features/Ledger/LedgerStateCache.cs): the writer applies a batch to the account state it
-- committed last, then sends one round trip that begins, checks that state is still current, writes and commits.
-- This check locks the accounts in id order (as every batch does, so processes never deadlock) and raises TL001,
-- aborting the transaction, when any account differs from the state the batch was applied to (version, credit limit
-- and all four counters: everything the batch's checks read) or when a transfer id the batch treats as new already
-- exists (a replay the cache did not know). The writer then applies the batch the
-- ordinary way, reading the state under the locks.
CREATE FUNCTION ledger_expect_state(ids bigint[], versions bigint[], limits bigint[], debits_pending bigint[],
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
    RAISE EXCEPTION 'a transfer the batch treats as new already exists' USING ERRCODE = 'TL001';
  END IF;
END
$$;
