-- The Stripe customer of each account, created once (with an idempotency key) and reused.
CREATE TABLE stripe_customers (
    account_id   text   NOT NULL PRIMARY KEY REFERENCES accounts (id),
    customer_id  text   NOT NULL UNIQUE,
    created_at   bigint NOT NULL
);

-- Every Checkout Session Tollgate created: the webhook credits only what is recorded here (its amount, its pack),
-- never what an event claims. payment_intent links later refunds and disputes back to the purchase.
CREATE TABLE stripe_checkouts (
    id               text   NOT NULL PRIMARY KEY,
    account_id       text   NOT NULL REFERENCES accounts (id),
    mode             text   NOT NULL,
    pack_id          text,
    plan_id          text,
    plan_interval    text,
    amount_cents     bigint NOT NULL,
    currency         text   NOT NULL,
    amount_micros    bigint NOT NULL,
    status           text   NOT NULL,
    payment_intent   text,
    credited_micros  bigint NOT NULL DEFAULT 0,
    refunded_cents   bigint NOT NULL DEFAULT 0,
    clawed_back_micros bigint NOT NULL DEFAULT 0,
    unrecovered_micros bigint NOT NULL DEFAULT 0,
    created_at       bigint NOT NULL,
    completed_at     bigint
);
CREATE INDEX stripe_checkouts_payment_intent ON stripe_checkouts (payment_intent);

-- Webhook events received (verified), one row per Stripe event id: a redelivery finds its row and changes nothing.
CREATE TABLE stripe_events (
    id           text   NOT NULL PRIMARY KEY,
    type         text   NOT NULL,
    created      bigint NOT NULL,
    account_id   text,
    outcome      text   NOT NULL,
    received_at  bigint NOT NULL
);

-- Disputed amounts frozen (a ledger hold per dispute), released when won, taken when lost.
CREATE TABLE stripe_disputes (
    id            text   NOT NULL PRIMARY KEY,
    account_id    text   NOT NULL REFERENCES accounts (id),
    charge_id     text,
    amount_cents  bigint NOT NULL,
    frozen_micros bigint NOT NULL,
    status        text   NOT NULL,
    updated_at    bigint NOT NULL
);

-- The latest state of each Stripe subscription as its events reported it. Events arrive in any order: a state is
-- applied only if its event is not older than the one applied last (last_event_created).
CREATE TABLE stripe_subscriptions (
    id                  text   NOT NULL PRIMARY KEY,
    account_id          text   NOT NULL REFERENCES accounts (id),
    plan_id             text,
    plan_interval       text,
    status              text   NOT NULL,
    last_event_created  bigint NOT NULL,
    past_due_since      bigint,
    updated_at          bigint NOT NULL
);
