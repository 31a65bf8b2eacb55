-- Outgoing webhooks. An account's endpoints (the signing secret only encrypted with Data Protection, purpose
-- tollgate.webhooks.v1: it must be usable to sign, so it cannot be a hash), its events (the outbox: written in the
-- transaction of what caused them, the exact JSON body kept so every attempt and replay signs the same bytes), one
-- delivery per (event, endpoint) that the dispatcher claims by lease, and every attempt made.
CREATE TABLE webhook_endpoints (
    id                 text   PRIMARY KEY,
    account_id         text   NOT NULL REFERENCES accounts (id),
    url                text   NOT NULL,
    description        text,
    events             text   NOT NULL,
    secret_ciphertext  text   NOT NULL,
    enabled            bigint NOT NULL,
    created_at         bigint NOT NULL,
    updated_at         bigint NOT NULL,
    deleted_at         bigint
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, id);

CREATE TABLE webhook_events (
    id          text   PRIMARY KEY,
    account_id  text   NOT NULL REFERENCES accounts (id),
    type        text   NOT NULL,
    created_at  bigint NOT NULL,
    payload     text   NOT NULL
);
CREATE INDEX webhook_events_account ON webhook_events (account_id, id);

CREATE TABLE webhook_deliveries (
    id                text   PRIMARY KEY,
    event_id          text   NOT NULL REFERENCES webhook_events (id),
    endpoint_id       text   NOT NULL REFERENCES webhook_endpoints (id),
    account_id        text   NOT NULL,
    status            text   NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts          bigint NOT NULL,
    next_attempt_at   bigint,
    lease_until       bigint,
    last_status_code  bigint,
    last_error        text,
    created_at        bigint NOT NULL,
    updated_at        bigint NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id               text   PRIMARY KEY,
    delivery_id      text   NOT NULL REFERENCES webhook_deliveries (id),
    kind             text   NOT NULL CHECK (kind IN ('scheduled', 'replay')),
    attempted_at     bigint NOT NULL,
    status_code      bigint,
    error            text,
    duration_ms      bigint NOT NULL,
    next_attempt_at  bigint
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- Alerts. Per-account thresholds (percent, comma-separated) and the low-balance line; without a row the configured
-- defaults apply.
CREATE TABLE alert_settings (
    account_id          text   PRIMARY KEY REFERENCES accounts (id),
    thresholds          text   NOT NULL,
    balance_low_micros  bigint,
    updated_at          bigint NOT NULL
);

-- One row per fired alert. The unique key is what makes a threshold fire once per (account, subject, period,
-- threshold) across processes: firing is an insert that does nothing on conflict. A resolved low-balance alert moves
-- its period_key from '' to its own id, which frees the slot for the next time the balance runs low.
CREATE TABLE alerts (
    id                 text   PRIMARY KEY,
    account_id         text   NOT NULL REFERENCES accounts (id),
    subject            text   NOT NULL,
    period_key         text   NOT NULL,
    threshold_percent  bigint NOT NULL,
    used               bigint,
    limit_value        bigint,
    balance_micros     bigint,
    fired_at           bigint NOT NULL,
    resolved_at        bigint,
    UNIQUE (account_id, subject, period_key, threshold_percent)
);
CREATE INDEX alerts_active ON alerts (account_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_account ON alerts (account_id, fired_at);
