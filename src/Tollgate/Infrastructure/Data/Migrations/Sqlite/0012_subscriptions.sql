-- Plans made through the admin API (/admin/v1/plans/{id}): every definition is kept as an immutable version
-- (snake_case JSON, the fields of Tollgate:Plans:<id>), so a subscription keeps the terms it subscribed to.
-- current_version 0 means "the configuration's definition" (a configured plan archived through the API).
CREATE TABLE plans (
    id               text   PRIMARY KEY,
    current_version  bigint NOT NULL,
    archived_at      bigint,
    updated_at       bigint NOT NULL
);

CREATE TABLE plan_versions (
    plan_id     text   NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    definition  text   NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (plan_id, version)
);

-- Bumped with every change to plans: each process polls this one row and reloads its plan snapshot when it moves.
CREATE TABLE plans_version (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  bigint  NOT NULL
);
INSERT INTO plans_version (id, version) VALUES (1, 0);

-- The terms the gateway reads with the account (no extra query per request): the plan version (null = current)
-- and the length of its periods in months (1 monthly, 12 yearly).
ALTER TABLE accounts ADD COLUMN plan_version bigint;
ALTER TABLE accounts ADD COLUMN plan_period_months bigint NOT NULL DEFAULT 1;

-- One current subscription per account (a canceled one stays until the account subscribes again). revision grows
-- with every change: updates are conditional on it (two concurrent changes cannot both apply) and the ledger
-- transfer ids of a change include it (a retried change replays its transfers instead of repeating them).
CREATE TABLE subscriptions (
    id                      text    PRIMARY KEY,
    account_id              text    NOT NULL UNIQUE REFERENCES accounts (id),
    plan_id                 text    NOT NULL,
    plan_version            bigint  NOT NULL,
    billing_interval        text    NOT NULL CHECK (billing_interval IN ('month', 'year')),
    status                  text    NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    billing                 text    NOT NULL CHECK (billing IN ('credits', 'external')),
    anchor                  bigint  NOT NULL,
    current_period_start    bigint  NOT NULL,
    current_period_end      bigint  NOT NULL,
    trial_end               bigint,
    cancel_at_period_end    bigint  NOT NULL DEFAULT 0,
    pending_plan_id         text,
    pending_interval        text,
    canceled_at             bigint,
    stripe_subscription_id  text,
    stripe_customer_id      text,
    revision                bigint  NOT NULL,
    created_at              bigint  NOT NULL,
    updated_at              bigint  NOT NULL
);
CREATE INDEX subscriptions_due ON subscriptions (current_period_end) WHERE status <> 'canceled';
CREATE UNIQUE INDEX subscriptions_stripe ON subscriptions (stripe_subscription_id) WHERE stripe_subscription_id IS NOT NULL;

-- Every change of a subscription, oldest first: what it became and why.
CREATE TABLE subscription_history (
    id integer PRIMARY KEY AUTOINCREMENT,
    subscription_id       text   NOT NULL,
    account_id            text   NOT NULL,
    event                 text   NOT NULL,
    plan_id               text   NOT NULL,
    plan_version          bigint NOT NULL,
    billing_interval      text   NOT NULL,
    status                text   NOT NULL,
    current_period_start  bigint NOT NULL,
    current_period_end    bigint NOT NULL,
    detail                text,
    created_at            bigint NOT NULL
);
CREATE INDEX subscription_history_account ON subscription_history (account_id, id);
