-- The outbox and its consumer, in PostgreSQL (15; 12+ works). Explained in SCHEMA.md.
--
--   psql -v ON_ERROR_STOP=1 -f docs/outbox/SCHEMA.sql
--
-- Idempotent: every statement creates only what is missing, so it can run again on the same
-- database (`flyrtech project` runs it at start-up). The whole file is one transaction.

BEGIN;

-- ---------------------------------------------------------------------------------------------
-- Producer side, for a deployment that keeps journeys in this database instead of Redis: the
-- outbox rows are inserted in the same transaction as the aggregate's rows.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS outbox (
    id              uuid        PRIMARY KEY,            -- the event id (UUIDv7), assigned by the
                                                        -- domain: a retried insert cannot
                                                        -- create a second row
    aggregate_type  text        NOT NULL,               -- 'journey'
    aggregate_id    text        NOT NULL,               -- 'JRN-001'
    sequence        bigint      NOT NULL,               -- the journey version the change produced
    position        smallint    NOT NULL DEFAULT 0,     -- the event's place within its change
    event_type      text        NOT NULL,               -- 'SegmentStatusChanged', ...
    payload         jsonb       NOT NULL,               -- the event as consumers receive it
    occurred_at     timestamptz NOT NULL,               -- from the domain's injected clock
    created_at      timestamptz NOT NULL DEFAULT now(), -- commit-side time, for monitoring
    processed_at    timestamptz,                        -- NULL until the relay published it
    attempts        integer     NOT NULL DEFAULT 0,     -- deliveries tried, for parking
    last_error      text,
    parked_at       timestamptz,                        -- set instead of processed_at for poison rows
    CONSTRAINT outbox_one_change_per_version
        UNIQUE (aggregate_type, aggregate_id, sequence, position),
    CONSTRAINT outbox_done_or_parked CHECK (processed_at IS NULL OR parked_at IS NULL)
);

-- The relay's work queue: unprocessed, unparked rows in commit order; small however large the
-- table, because processed rows leave it.
CREATE INDEX IF NOT EXISTS outbox_pending
    ON outbox (id)
    WHERE processed_at IS NULL AND parked_at IS NULL;

-- A journey's history in sequence order (per-aggregate ordering, the audit).
CREATE INDEX IF NOT EXISTS outbox_by_aggregate
    ON outbox (aggregate_type, aggregate_id, sequence, position);

-- The retention job: delete processed rows older than the bus' retention.
CREATE INDEX IF NOT EXISTS outbox_processed_at
    ON outbox (processed_at)
    WHERE processed_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Consumer side: the projection `flyrtech project` builds from the bus.
-- ---------------------------------------------------------------------------------------------

-- The idempotency record: one row per change received (its first event's id). Inserted in the
-- same transaction as the change's effects; a redelivery finds its row and changes nothing.
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid        PRIMARY KEY,
    journey_id   text        NOT NULL,
    version      bigint      NOT NULL CHECK (version > 0),
    outcome      text        NOT NULL,                  -- applied, held, replaced (applied in
                                                        -- place of a change at its version),
                                                        -- superseded (applied, then undone)
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- The outcomes a projector records (a database made before 'replaced' and 'superseded' gains
-- them; 'stale' rows of earlier projectors stay valid).
ALTER TABLE processed_events DROP CONSTRAINT IF EXISTS processed_events_outcome_check;
ALTER TABLE processed_events ADD CONSTRAINT processed_events_outcome_check
    CHECK (outcome IN ('applied', 'held', 'stale', 'replaced', 'superseded'));

-- The per-journey position: the last version applied. Version n is applied only when
-- last_version = n - 1 (the row is locked for that decision, so two projectors cannot both
-- apply n); later versions wait in held_events; an unseen n <= last_version replaces the
-- changes applied from n on (SCHEMA.md, "A version given twice").
CREATE TABLE IF NOT EXISTS journey_positions (
    journey_id   text        PRIMARY KEY,
    last_version bigint      NOT NULL DEFAULT 0 CHECK (last_version >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Changes that arrived before their predecessor, kept until the gap fills; applied (and
-- deleted) in the transaction that applies their predecessor.
CREATE TABLE IF NOT EXISTS held_events (
    journey_id text        NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    envelope   jsonb       NOT NULL,
    held_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journey_id, version)
);

-- Each journey's current journey status, as the applied changes left it. No row until a
-- change of the journey's own status was applied; `version` is the version of that change.
CREATE TABLE IF NOT EXISTS projected_journeys (
    journey_id         text        PRIMARY KEY,
    status             text        NOT NULL,
    version            bigint      NOT NULL CHECK (version > 0),
    completed_at       timestamptz,
    customer_id        text,
    total_amount_cents bigint      CHECK (total_amount_cents >= 0),
    updated_at         timestamptz NOT NULL
);

-- Each segment's current status, as the applied changes left it.
CREATE TABLE IF NOT EXISTS projected_segments (
    journey_id text        NOT NULL,
    segment_id text        NOT NULL,
    status     text        NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (journey_id, segment_id)
);

-- Every applied event, once: the history of every status.
CREATE TABLE IF NOT EXISTS status_history (
    event_id    uuid        PRIMARY KEY,
    journey_id  text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    position    smallint    NOT NULL,
    event_type  text        NOT NULL,
    segment_id  text,                                   -- NULL for the journey's own status
    from_status text,
    to_status   text,
    occurred_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    projected_at timestamptz NOT NULL DEFAULT now(),   -- with occurred_at: the end-to-end lag
    trace_id    text,                                   -- the W3C trace id of the request that
                                                        -- made the change, when it was traced
    UNIQUE (journey_id, version, position)
);

-- A history made before traces gains the column (PostgreSQL 9.6+).
ALTER TABLE status_history ADD COLUMN IF NOT EXISTS trace_id text;

CREATE INDEX IF NOT EXISTS status_history_by_segment
    ON status_history (journey_id, segment_id, version);

-- What `flyrtech project` checks at start-up: a database with another mark (or none) gets this
-- file again, which adds what it lacks.
COMMENT ON TABLE processed_events IS 'flyrtech projection schema 2';

COMMIT;
