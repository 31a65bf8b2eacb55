-- Shared gateway rate limits (Features/Gateway/RateLimitSync): the state several `tollgate serve` processes on one
-- database exchange every sync interval, so requests-, tokens-per-minute and concurrency limits hold across them.
-- UNLOGGED: this is soft, fast-changing state; it is not worth WAL, and after a PostgreSQL crash (which empties
-- unlogged tables) the limits simply start a fresh minute. Nothing here is money.

-- Requests and tokens admitted per scope ('k:<key id>' or 'a:<account id>') and wall-clock minute
-- (Unix seconds / 60), summed over every process. Rows older than two minutes are deleted by the sync loop.
CREATE UNLOGGED TABLE rate_windows (
    scope          text   NOT NULL,
    window_minute  bigint NOT NULL,
    requests       bigint NOT NULL DEFAULT 0,
    tokens         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, window_minute)
);

-- Calls in flight per scope and process: a lease each process renews every sync and that lapses at expires_at,
-- so a process that dies without a word frees its concurrency slots after the lease time.
CREATE UNLOGGED TABLE rate_leases (
    scope       text        NOT NULL,
    process_id  text        NOT NULL,
    in_flight   integer     NOT NULL CHECK (in_flight > 0),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, process_id)
);
CREATE INDEX rate_leases_process ON rate_leases (process_id);

-- Live gateway processes (heartbeat each sync): their number splits what is left of a limit between them.
CREATE UNLOGGED TABLE gateway_processes (
    process_id    text        PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
