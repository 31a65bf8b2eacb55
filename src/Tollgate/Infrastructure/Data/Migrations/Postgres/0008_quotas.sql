-- When the account's current plan began: its periods (monthly, anniversary) are counted from here.
ALTER TABLE accounts ADD COLUMN plan_anchor bigint;

-- Requests (or other counted units) used per account, quota kind and plan period. One row per period, updated by a
-- single conditional upsert, so the count is exact under any concurrency and across processes.
CREATE TABLE quota_usage (
    account_id    text   NOT NULL REFERENCES accounts (id),
    kind          text   NOT NULL,
    period_start  bigint NOT NULL,
    used          bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (account_id, kind, period_start)
);
