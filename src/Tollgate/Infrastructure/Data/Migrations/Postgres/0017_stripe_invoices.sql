-- Invoices for postpaid usage: what an account owed beyond its credits at the end of a month, billed through Stripe
-- once per account and month, and credited back when Stripe reports the invoice paid.
CREATE TABLE stripe_invoices (
    id             text   NOT NULL PRIMARY KEY,
    account_id     text   NOT NULL REFERENCES accounts (id),
    period         text   NOT NULL,
    amount_cents   bigint NOT NULL CHECK (amount_cents > 0),
    amount_micros  bigint NOT NULL,
    status         text   NOT NULL,
    created_at     bigint NOT NULL,
    paid_at        bigint,
    UNIQUE (account_id, period)
);
