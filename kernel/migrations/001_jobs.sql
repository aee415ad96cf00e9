-- 001_jobs.sql — the durable job queue of kernel/jobs.c.
--
-- A job is a row of rx_jobs. Runners claim due rows with FOR UPDATE SKIP
-- LOCKED (so many instances never take the same row), hold them with a lease
-- (locked_until: a row still 'running' past its lease belongs to a process
-- that died and is claimed again), and finish them as 'done', back to
-- 'queued' with a later run_at (retry with backoff) or 'dead'.
--
-- Enqueue with the SQL function rx_enqueue() in the same statement (or
-- transaction) as the change that causes the job: both commit or neither
-- does, and its NOTIFY is delivered only on commit.

CREATE TABLE rx_jobs (
    id           bigserial PRIMARY KEY,
    task         text        NOT NULL CHECK (task <> ''),
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state        text        NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts     int         NOT NULL DEFAULT 0,
    -- NULL: the task's registered max_attempts (the runner knows it; SQL does not).
    max_attempts int         CHECK (max_attempts IS NULL OR max_attempts > 0),
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,          -- the lease of the attempt running now
    locked_by    text,                 -- instance that ran the last attempt
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- Claiming looks for state = 'queued' AND run_at <= now() (and expired
-- 'running' leases); counts by state for /metrics use it too.
CREATE INDEX rx_jobs_claim ON rx_jobs (state, run_at);
-- Purging old finished jobs and `rxd jobs` (done in the last 24 h).
CREATE INDEX rx_jobs_finished ON rx_jobs (finished_at) WHERE state IN ('done', 'dead');

-- Periodic tasks (rx_every): the last slot that fired, per task. An instance
-- fires a slot only when it moves last_slot forward, so one instance wins
-- each slot however many run.
CREATE TABLE rx_periodic (
    name      text PRIMARY KEY,
    last_slot timestamptz NOT NULL
);

-- Enqueue a job; returns its id. Usable inside any statement, e.g.
--   WITH o AS (INSERT INTO orders ... RETURNING id)
--   SELECT rx_enqueue('orders.notify', jsonb_build_object('id', o.id)) FROM o;
-- pg_notify wakes the runners when the transaction commits (and never if it
-- rolls back); notifications with the same payload in one transaction are
-- folded into one.
CREATE FUNCTION rx_enqueue(task text, payload jsonb, run_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    job_id bigint;
BEGIN
    IF task IS NULL OR task = '' THEN
        RAISE EXCEPTION 'rx_enqueue: the task name is required';
    END IF;
    INSERT INTO rx_jobs (task, payload, run_at)
    VALUES (task, coalesce(payload, '{}'::jsonb), coalesce(run_at, now()))
    RETURNING id INTO job_id;
    PERFORM pg_notify('rx_jobs', '');
    RETURN job_id;
END;
$$;
