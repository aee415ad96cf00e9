-- Incoming webhook events (the connector's WebhookEvent), stored as received,
-- and the two functions through which the modules that own the data (inventory,
-- orders) record the outcome of applying one. webhooks never touches their
-- tables; they never touch this one except through these functions.
CREATE TABLE webhook_events (
    id               bigserial PRIMARY KEY,
    pharmacy_id      bigint NOT NULL REFERENCES pharmacies (id) ON DELETE CASCADE,
    event_type       text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 100),
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    -- The Idempotency-Key header or the payload's event_id; NULL = no key,
    -- every such delivery is a new event (NULLs never conflict in the index).
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed        boolean NOT NULL DEFAULT false,
    processing_error text,
    processed_at     timestamptz
);
-- Idempotency is per pharmacy: the same key from another pharmacy is another event.
CREATE UNIQUE INDEX webhook_events_idem ON webhook_events (pharmacy_id, idempotency_key);
CREATE INDEX webhook_events_pharmacy ON webhook_events (pharmacy_id, id);
CREATE INDEX webhook_events_type ON webhook_events (event_type);

-- Mark an event processed. Returns true only for the first caller: the row
-- lock taken by the UPDATE serialises concurrent callers, and the second sees
-- processed = true and updates nothing. Owners call it inside the statement
-- that applies the change (e.g. WITH c AS (SELECT rx_webhook_claim($1) AS ok)
-- ... WHERE (SELECT ok FROM c)), so a retried apply job changes data once.
CREATE FUNCTION rx_webhook_claim(event_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    WITH u AS (
        UPDATE webhook_events
           SET processed = true, processing_error = NULL, processed_at = now()
         WHERE id = event_id AND NOT processed
        RETURNING true AS ok)
    SELECT coalesce((SELECT ok FROM u), false)
$$;

-- Record why an event could not be applied (a validation failure the sender
-- can read at /api/webhook-events/{id}/). processed stays false, and an event
-- already processed is left as it is.
CREATE FUNCTION rx_webhook_fail(event_id bigint, error text) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE webhook_events
       SET processing_error = left(coalesce(error, 'error'), 1000)
     WHERE id = event_id AND NOT processed
$$;
