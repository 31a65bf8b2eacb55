-- Double-entry ledger: accounts with four counters, transfers (the idempotency key is the id), append-only entries.
CREATE TABLE ledger_accounts (
    id               INTEGER PRIMARY KEY,
    kind             text    NOT NULL,
    key              text    UNIQUE,
    currency         text    NOT NULL DEFAULT 'USD',
    credit_limit     bigint  NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    flags            integer NOT NULL DEFAULT 0,
    debits_pending   bigint  NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted    bigint  NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending  bigint  NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted   bigint  NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    version          bigint  NOT NULL DEFAULT 0,
    created_at       bigint  NOT NULL
);

-- kind: 0 posted, 1 pending, 2 post_pending, 3 void_pending.
-- status: 0 final, 1 pending, 2 posted, 3 voided, 4 expired. Timestamps are Unix microseconds.
CREATE TABLE ledger_transfers (
    id                    text     PRIMARY KEY,
    kind                  integer NOT NULL,
    debit_account_id      bigint   NOT NULL,
    credit_account_id     bigint   NOT NULL,
    amount                bigint   NOT NULL CHECK (amount >= 0),
    pending_id            text,
    timeout_seconds       integer  NOT NULL DEFAULT 0,
    expires_at            bigint,
    status                integer NOT NULL,
    code                  text     NOT NULL,
    reference             text,
    description           text,
    metadata              text,
    ts                    bigint   NOT NULL,
    debit_balance_after   bigint   NOT NULL,
    credit_balance_after  bigint   NOT NULL
) WITHOUT ROWID;
CREATE INDEX ledger_transfers_open_holds ON ledger_transfers (expires_at) WHERE status = 1;

CREATE TABLE ledger_entries (
    account_id             bigint  NOT NULL,
    version                bigint  NOT NULL,
    transfer_id            text    NOT NULL,
    is_debit               integer NOT NULL,
    pending_delta          bigint  NOT NULL,
    posted_delta           bigint  NOT NULL,
    balance_after          bigint  NOT NULL,
    debits_pending_after   bigint  NOT NULL,
    credits_pending_after  bigint  NOT NULL,
    ts                     bigint  NOT NULL,
    PRIMARY KEY (account_id, version)
) WITHOUT ROWID;
