-- The plan an account is on (an id of Tollgate:Plans; 'default' until subscriptions arrive).
ALTER TABLE accounts ADD COLUMN plan_id text NOT NULL DEFAULT 'default';
