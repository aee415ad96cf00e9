/*
 * audit.c — audit rows written on their own, for events that change nothing
 * else. Most events are written inside the statement that makes the change
 * (see AUTH_AUDIT_INSERT in auth.h), so the row and the change commit
 * together; metadata never holds a code, a password or a token, and
 * identifiers in it are masked (auth_meta).
 */
#include "auth.h"

int auth_audit(rx_req *req, rx_db_cb cb, const char *action, int64_t user_id, const json_t *meta)
{
    return rx_db(req, cb,
                 AUTH_AUDIT_INSERT "VALUES ($3, $4, $1, $2, COALESCE($5::jsonb, '{}'::jsonb))",
                 RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)),
                 user_id > 0 ? RX_INT(user_id) : RX_NULL, RX_TEXT(action), RX_JSON(meta));
}
