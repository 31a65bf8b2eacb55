-- A purchase's refund state moves by compare-and-set on this sequence: each change (credits taken back for a refund,
-- given back when a refund fails) is the ledger transfer stripe:refund:{charge}:{seq}, and the new state is written in
-- the same transaction. Two deliveries racing on one charge cannot both apply, and a refunded total reached twice
-- (refund, refund failed, refunded again) is two changes, not one replayed.
ALTER TABLE stripe_checkouts ADD COLUMN refund_seq integer NOT NULL DEFAULT 0;
