/*
 * webhooks.h — internal header of the webhooks module: what each file offers
 * the others. Nothing here is part of the SDK; the module's contract with the
 * owners of the data is SQL (migrations/001_webhook_events.sql:
 * rx_webhook_claim, rx_webhook_fail) and the task names below.
 */
#ifndef WEBHOOKS_H
#define WEBHOOKS_H

#include <rx.h>
#include <stdint.h>

/* The job that looks at a stored event and dispatches it. Payload {"event_id"}. */
#define WH_TASK_PROCESS "webhooks.process"
/* Owners register WH_APPLY_PREFIX "<event type>"; payload
 * {"event_id", "pharmacy_id", "payload"}. */
#define WH_APPLY_PREFIX "webhook.apply."

/* The columns of a WebhookEvent as the API shows it, from table alias `w`. */
#define WH_COLS                                                                                    \
    "w.id, w.pharmacy_id AS pharmacy, w.event_type, w.payload, w.received_at, w.processed,"        \
    " w.processing_error, w.idempotency_key"

extern rx_module *wh_mod;

/* webhooks.c: the shared reply helpers. */
void wh_reply_not_found(rx_req *req);
void wh_reply_server_error(rx_req *req);
/* Append `msg` to errs[field] (a DRF validation error body). */
void wh_add_err(json_t *errs, const char *field, const char *msg);
/* Validate event_type / payload of a body into *type / *payload (borrowed from
 * the body); `required` = create or PUT. Adds messages to errs. */
void wh_read_fields(rx_req *req, json_t *body, int required, json_t *errs, const char **type,
                    json_t **payload);

/* ingest.c: POST /api/webhook-events/. */
void wh_ingest(rx_req *req);

/* process.c: the WH_TASK_PROCESS task. */
void wh_process(rx_req *job);

#endif
