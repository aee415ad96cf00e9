/*
 * users_admin.c — the super admin's user endpoints (API.md "Roles and
 * permissions"), at /api/admin/users/ and, for the old frontend's admin
 * panel, /api/auth/admin/users/. Permission users.manage (SUPER_ADMIN only).
 *
 * Every change is one SQL statement: the change itself, the refusal to leave
 * no active super admin (decided under row locks on the super admins, so two
 * concurrent demotions cannot both pass), the audit rows (ROLE_CHANGED,
 * STATUS_CHANGED, PHARMACY_CHANGED, USER_DELETED, USER_RESTORED, with actor
 * and masked identifiers) and the end of the user's sessions (refresh tokens
 * revoked, tokens_valid_after moved) commit together. A user whose status
 * leaves ACTIVE or who is deleted also gets auth:user_off:<id> in Redis, which
 * auth's authenticate hook checks on every bearer request, so their access
 * tokens stop at once on every instance; auth's status cache (at most
 * auth.status_cache_ms) enforces the same from the database even if Redis
 * missed it. A change of role or pharmacy ends the user's sessions too: the
 * access token carries role and pharmacy, and a demoted admin must not keep
 * the old powers until it expires.
 *
 * Ending the sessions means adding one to users.token_generation (and
 * setting tokens_valid_after to now(), which only tokens from before the
 * generation existed are compared with): auth's tokens carry the generation
 * they were issued under, so every token issued before the change is
 * refused and one issued after it is accepted, even within the same second
 * (modules/auth/tokens.c).
 *
 * auth's workers each cache a user's standing for auth.status_cache_ms. After
 * a committed change that ended the user's sessions, the user's id (decimal)
 * is published on the Redis channel "auth:sessions_ended", which auth
 * subscribes to: every worker of every instance drops the user's entry, so the
 * old tokens stop before the reply reaches the admin, not up to a cache
 * interval later. The channel name and the message are the contract with
 * auth (this module does not include auth's headers). With Redis down the
 * change still succeeds (logged) and the cache interval bounds the delay.
 */
#include "rbac.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longer than auth's status cache, after which the database says the same. */
#define USER_OFF_TTL "600"

#define SUPER_ADMINS_LOCKED                                                                        \
    " sa AS (SELECT id FROM users"                                                                 \
    "         WHERE role = 'SUPER_ADMIN' AND status = 'ACTIVE' AND deleted_at IS NULL"             \
    "         ORDER BY id FOR UPDATE),"

#define AUDIT_INSERT "INSERT INTO audit_logs (user_id, action, ip, user_agent, metadata, actor) "

/* $1 ip, $2 user agent, $3 user id (or NULL: then $13, an e-mail, finds the
 * user), $4 actor (NULL from the CLI), $5 username, $6 email, $7 phone,
 * $8 password hash (NULL keeps), $9 role, $10 status (NULL keeps each),
 * $11 whether $12 (pharmacy id or NULL) was given. A role other than
 * PHARMACY_ADMIN with no pharmacy given clears it. Returns no row for an
 * unknown or deleted user; else the user (NULL columns when refused) and
 * the flags last_sa, bad_pharmacy, bad_ident, went_off, went_on, done.
 * The sa CTE is read before the user's row is locked (the o CTE depends on
 * it), so every such statement locks in the same order: no deadlock. */
const char rbac_update_sql[] =
    "WITH" SUPER_ADMINS_LOCKED " o AS (SELECT u.* FROM users u"
    "        WHERE u.id = COALESCE($3::bigint,"
    "                (SELECT x.id FROM users x WHERE lower(x.email) = lower($13::text)"
    "                    AND x.email <> '' AND x.deleted_at IS NULL))"
    "          AND u.deleted_at IS NULL AND (SELECT count(*) FROM sa) >= 0"
    "        FOR UPDATE),"
    " n AS (SELECT o.id, o.role AS old_role, o.status AS old_status,"
    "              o.pharmacy_id AS old_pharmacy,"
    "              COALESCE($9::text, o.role) AS role, COALESCE($10::text, o.status) AS status,"
    "              CASE WHEN $11::bool THEN $12::bigint"
    "                   WHEN COALESCE($9::text, o.role) <> 'PHARMACY_ADMIN' THEN NULL"
    "                   ELSE o.pharmacy_id END AS pharmacy_id,"
    "              COALESCE($6::text, o.email) AS email, COALESCE($7::text, o.phone) AS phone"
    "         FROM o),"
    " c AS (SELECT n.*,"
    "              n.old_role = 'SUPER_ADMIN' AND n.old_status = 'ACTIVE'"
    "                AND NOT (n.role = 'SUPER_ADMIN' AND n.status = 'ACTIVE')"
    "                AND NOT EXISTS (SELECT 1 FROM sa WHERE sa.id <> n.id) AS last_sa,"
    "              (n.role = 'PHARMACY_ADMIN') <> (n.pharmacy_id IS NOT NULL) AS bad_pharmacy,"
    "              n.email = '' AND n.phone = '' AS bad_ident,"
    "              n.old_status = 'ACTIVE' AND n.status <> 'ACTIVE' AS went_off,"
    "              n.old_status <> 'ACTIVE' AND n.status = 'ACTIVE' AS went_on,"
    "              $8::text IS NOT NULL OR n.role <> n.old_role"
    "                OR n.pharmacy_id IS DISTINCT FROM n.old_pharmacy"
    "                OR (n.status <> n.old_status AND n.status <> 'ACTIVE') AS ends"
    "         FROM n),"
    " upd AS (UPDATE users u SET"
    "           username = COALESCE($5::text, u.username),"
    "           email = c.email, email_verified = u.email_verified AND c.email = u.email,"
    "           phone = c.phone, phone_verified = u.phone_verified AND c.phone = u.phone,"
    "           password_hash = COALESCE($8::text, u.password_hash),"
    "           failed_login_attempts = CASE WHEN $8::text IS NULL"
    "                                   THEN u.failed_login_attempts ELSE 0 END,"
    "           locked_until = CASE WHEN $8::text IS NULL THEN u.locked_until END,"
    "           role = c.role, status = c.status, pharmacy_id = c.pharmacy_id,"
    "           tokens_valid_after = CASE WHEN c.ends THEN now() ELSE u.tokens_valid_after END,"
    "           token_generation = u.token_generation + CASE WHEN c.ends THEN 1 ELSE 0 END,"
    "           updated_at = now()"
    "          FROM c"
    "         WHERE u.id = c.id AND NOT (c.last_sa OR c.bad_pharmacy OR c.bad_ident)"
    "        RETURNING u.*),"
    " rt AS (UPDATE refresh_tokens t SET revoked_at = now()"
    "          FROM upd JOIN c ON c.id = upd.id"
    "         WHERE t.user_id = upd.id AND c.ends AND t.revoked_at IS NULL RETURNING 1),"
    " au AS (" AUDIT_INSERT "        SELECT upd.id, x.action, $1::text, $2::text,"
    "               rbac_audit_meta(upd.email, upd.phone, $4::bigint)"
    "                 || jsonb_build_object('from', x.f, 'to', x.t),"
    "               $4::bigint"
    "          FROM upd JOIN c ON c.id = upd.id,"
    "               LATERAL (VALUES ('ROLE_CHANGED', to_jsonb(c.old_role), to_jsonb(c.role)),"
    "                               ('STATUS_CHANGED', to_jsonb(c.old_status), to_jsonb(c.status)),"
    "                               ('PHARMACY_CHANGED', to_jsonb(c.old_pharmacy),"
    "                                                    to_jsonb(c.pharmacy_id)))"
    "                 AS x(action, f, t)"
    "         WHERE x.f IS DISTINCT FROM x.t RETURNING 1)"
    " SELECT " RBAC_USER_COLS ", c.id AS target, c.last_sa, c.bad_pharmacy, c.bad_ident,"
    "        c.went_off, c.went_on, u.id IS NOT NULL AS done,"
    "        c.ends AND u.id IS NOT NULL AS ended"
    "   FROM c LEFT JOIN upd u ON u.id = c.id";

/* State of one request across its async steps (request arena). */
typedef struct uctx {
    int64_t id;
    const char *username, *email, *phone, *password, *role, *status;
    bool ph_set;
    int64_t pharmacy; /* 0 = none */
    char hash[crypto_pwhash_STRBYTES];
    bool hash_failed;
    json_t *reply; /* body waiting for the Redis step (owned), NULL for 204 */
    int code;
    bool ended; /* the change ended the user's sessions: tell auth's workers */
} uctx;

static uctx *ctx(rx_req *req)
{
    uctx *c = rx_req_data(req);
    if (c == NULL) {
        c = rx_req_alloc(req, sizeof *c);
        rx_req_set_data(req, c);
    }
    return c;
}

static bool bool_flag(const rx_rows *r, const char *name)
{
    bool v = false;
    rx_rows_bool(r, 0, rx_rows_column(r, name), &v);
    return v;
}

static void reply_not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

static void reply_last_super_admin(rx_req *req)
{
    rx_reply_error(req, 409, "last_super_admin",
                   "This is the last active super admin: promote another user first.");
}

/* A failed write: DRF's answers to the users' unique indexes and to a
 * pharmacy that does not exist (once the pharmacies module adds its foreign
 * key); anything else is the SDK's 503/500. */
static void reply_write_error(rx_req *req, const rx_rows *rows)
{
    const char *st = rx_rows_sqlstate(rows);
    const char *cn = rx_rows_constraint(rows);
    if (rx_rows_error(rows) == RX_EDB && st != NULL) {
        if (strcmp(st, "23505") == 0 && cn != NULL) {
            if (strcmp(cn, "users_email_key") == 0) {
                rx_reply_invalid_field(req, "email", "user with this email already exists.");
                return;
            }
            if (strcmp(cn, "users_phone_key") == 0) {
                rx_reply_invalid_field(req, "phone", "user with this phone already exists.");
                return;
            }
            if (strcmp(cn, "users_username_key") == 0) {
                rx_reply_invalid_field(req, "username",
                                       "A user with that username already exists.");
                return;
            }
        }
        if (strcmp(st, "23503") == 0) {
            rx_reply_invalid_field(req, "pharmacy", "Invalid pk \"%lld\" - object does not exist.",
                                   (long long)ctx(req)->pharmacy);
            return;
        }
    }
    rx_reply_db_error(req, rows);
}

/* ---- the Redis step after a committed change ---- */

static void reply_now(rx_req *req)
{
    uctx *c = ctx(req);
    json_t *body = c->reply;
    c->reply = NULL;
    if (body == NULL)
        rx_reply(req, c->code, NULL, NULL, 0);
    else
        rx_reply_json(req, c->code, body);
}

/* Waiting for Redis' answer means the message is on its way to every
 * subscribed worker before the admin sees the reply. */
static void published(rx_req *req, int err, const rx_redis_reply *r)
{
    uctx *c = ctx(req);
    if (err != 0 || rx_redis_reply_type(r) == RX_REDIS_ERROR)
        rx_log(rbac_mod, RX_LOG_WARN,
               "end of user %lld's sessions not published on " SESSIONS_ENDED_CHANNEL
               " (%s): auth's workers notice within auth.status_cache_ms",
               (long long)c->id, err ? rx_strerror(err) : "redis error");
    reply_now(req);
}

static void redis_done(rx_req *req, int err, const rx_redis_reply *r)
{
    uctx *c = ctx(req);
    /* The change is committed and the database enforces it within
     * auth.status_cache_ms anyway: a Redis failure is logged, not answered. */
    if (err != 0 || rx_redis_reply_type(r) == RX_REDIS_ERROR)
        rx_log(rbac_mod, RX_LOG_WARN, "auth:user_off:%lld not updated in Redis (%s)",
               (long long)c->id, err ? rx_strerror(err) : "redis error");
    if (!c->ended) {
        reply_now(req);
        return;
    }
    int rc = rx_redis(req, published, "PUBLISH", SESSIONS_ENDED_CHANNEL,
                      rx_req_sprintf(req, "%lld", (long long)c->id));
    if (rc != 0)
        published(req, rc, NULL);
}

/* off: SET the key (tokens stop now); else DEL it (the user is back). */
static void finish(rx_req *req, int code, json_t *body, bool redis, bool off)
{
    uctx *c = ctx(req);
    c->code = code;
    c->reply = body;
    if (!redis) {
        redis_done(req, 0, NULL);
        return;
    }
    const char *key = rx_req_sprintf(req, "auth:user_off:%lld", (long long)c->id);
    int rc = off ? rx_redis(req, redis_done, "SET", key, "1", "EX", USER_OFF_TTL)
                 : rx_redis(req, redis_done, "DEL", key);
    if (rc != 0)
        redis_done(req, rc, NULL);
}

/* ---- body ---- */

/* A string field: NULL when absent or null; a wrong type or a value over
 * maxlen bytes adds DRF's error. */
static const char *str_field(json_t *body, const char *name, json_t *errs, size_t maxlen)
{
    json_t *v = json_object_get(body, name);
    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        rbac_err(errs, name, "Not a valid string.");
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) > maxlen) {
        char m[96];
        snprintf(m, sizeof m, "Ensure this field has no more than %zu characters.", maxlen);
        rbac_err(errs, name, m);
        return NULL;
    }
    return s;
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static const char *const statuses[] = {"ACTIVE", "INACTIVE", "LOCKED", "PENDING_VERIFICATION",
                                       NULL};

static bool status_valid(const char *s)
{
    for (int i = 0; statuses[i] != NULL; i++)
        if (strcmp(statuses[i], s) == 0)
            return true;
    return false;
}

static void choice_err(rx_req *req, json_t *errs, const char *field, const char *v)
{
    rbac_err(errs, field, rx_req_sprintf(req, "\"%s\" is not a valid choice.", v));
}

/* Read and check the body into c. Returns 0, or -1 after replying. */
static int read_body(rx_req *req, uctx *c, bool create)
{
    json_t *b = rx_req_json_object(req);
    if (b == NULL)
        return -1;
    json_t *errs = json_object();
    const char *username = str_field(b, "username", errs, 1024);
    if (username != NULL) {
        while (isspace((unsigned char)*username))
            username++;
        size_t n = strlen(username);
        while (n > 0 && isspace((unsigned char)username[n - 1]))
            n--;
        if (n == 0)
            rbac_err(errs, "username", "This field may not be blank.");
        else if (utf8_len(username, n) > 150)
            rbac_err(errs, "username", "Ensure this field has no more than 150 characters.");
        else
            c->username = rx_req_sprintf(req, "%.*s", (int)n, username);
    }
    const char *email = str_field(b, "email", errs, 255);
    if (email != NULL) {
        char ne[256];
        if (*email == '\0')
            c->email = "";
        else if (ident_norm_email(email, ne, sizeof ne) != 0)
            rbac_err(errs, "email", "Enter a valid email address.");
        else
            c->email = rx_req_strdup(req, ne);
    }
    const char *phone = str_field(b, "phone", errs, 255);
    if (phone != NULL) {
        char np[32];
        if (*phone == '\0')
            c->phone = "";
        else if (ident_norm_phone(phone, np, sizeof np) != 0)
            rbac_err(errs, "phone", "Enter a valid phone number.");
        else
            c->phone = rx_req_strdup(req, np);
    }
    const char *pw = str_field(b, "password", errs, 255);
    if (pw != NULL && *pw != '\0' && ident_password_rules(pw, errs, "password"))
        c->password = pw;
    const char *role = str_field(b, "role", errs, 255);
    if (role != NULL) {
        if (rbac_role_valid(role))
            c->role = role;
        else
            choice_err(req, errs, "role", role);
    }
    const char *status = str_field(b, "status", errs, 255);
    if (status != NULL) {
        if (status_valid(status))
            c->status = status;
        else
            choice_err(req, errs, "status", status);
    }
    json_t *act = json_object_get(b, "is_active");
    if (act != NULL && !json_is_null(act)) {
        if (!json_is_boolean(act))
            rbac_err(errs, "is_active", "Must be a valid boolean.");
        else if (status == NULL)
            c->status = json_is_true(act) ? "ACTIVE" : "INACTIVE";
    }
    json_t *ph = json_object_get(b, "pharmacy");
    if (ph != NULL) {
        c->ph_set = true;
        if (json_is_null(ph) || (json_is_string(ph) && *json_string_value(ph) == '\0')) {
            c->pharmacy = 0;
        } else if (json_is_integer(ph) && json_integer_value(ph) > 0) {
            c->pharmacy = json_integer_value(ph);
        } else if (json_is_string(ph) &&
                   strspn(json_string_value(ph), "0123456789") == strlen(json_string_value(ph)) &&
                   strlen(json_string_value(ph)) < 19 && atoll(json_string_value(ph)) > 0) {
            c->pharmacy = atoll(json_string_value(ph));
        } else if (json_is_integer(ph)) {
            rbac_err(errs, "pharmacy",
                     rx_req_sprintf(req, "Invalid pk \"%lld\" - object does not exist.",
                                    (long long)json_integer_value(ph)));
        } else {
            rbac_err(errs, "pharmacy", "Incorrect type. Expected pk value, received str.");
        }
    }
    if (create) {
        if (pw == NULL && json_object_get(errs, "password") == NULL)
            rbac_err(errs, "password", "This field is required.");
        else if (pw != NULL && *pw == '\0')
            rbac_err(errs, "password", "This field may not be blank.");
        if ((c->email == NULL || *c->email == '\0') && (c->phone == NULL || *c->phone == '\0') &&
            json_object_get(errs, "email") == NULL && json_object_get(errs, "phone") == NULL)
            rbac_err(errs, "non_field_errors", "Either phone or email is required.");
        if (c->role == NULL && json_object_get(errs, "role") == NULL)
            c->role = "REGISTERED_USER";
        if (c->status == NULL)
            c->status = "ACTIVE";
        if (c->role != NULL && json_object_get(errs, "pharmacy") == NULL) {
            bool pa = strcmp(c->role, "PHARMACY_ADMIN") == 0;
            if (pa && c->pharmacy == 0)
                rbac_err(errs, "pharmacy", "A pharmacy admin must have a pharmacy.");
            else if (!pa && c->pharmacy != 0)
                rbac_err(errs, "pharmacy", "Only a pharmacy admin has a pharmacy.");
        }
        /* The username defaults to the address, as register/email/ does. */
        if (c->username == NULL && json_object_get(errs, "username") == NULL)
            c->username = c->email && *c->email ? c->email : c->phone;
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return -1;
    }
    json_decref(errs);
    return 0;
}

/* Hash on the thread pool (Argon2id costs tens of ms by design), then `next`. */
typedef struct hash_job {
    uctx *c;
    void (*next)(rx_req *req);
} hash_job;

static void hash_work(void *arg)
{
    hash_job *j = arg;
    j->c->hash_failed = crypto_pwhash_str(j->c->hash, j->c->password, strlen(j->c->password),
                                          rbac_opslimit, rbac_memlimit) != 0;
}

static void hash_done(rx_req *req, void *arg)
{
    hash_job *j = arg;
    if (j->c->hash_failed) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    j->next(req);
}

static void with_hash(rx_req *req, uctx *c, void (*next)(rx_req *req))
{
    if (c->password == NULL) {
        next(req);
        return;
    }
    hash_job *j = rx_req_alloc(req, sizeof *j);
    j->c = c;
    j->next = next;
    if (rx_offload(req, hash_work, hash_done, j) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static int64_t actor(rx_req *req)
{
    return rx_req_principal(req)->user_id;
}

/* ---- list ---- */

static void listed(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    json_t *items = json_array();
    int64_t total = 0;
    for (int i = 0; i < rx_rows_count(rows); i++)
        json_array_append_new(items, ident_user_json(req, rows, i));
    if (rx_rows_count(rows) > 0)
        rx_rows_int(rows, 0, rx_rows_column(rows, "total_count"), &total);
    rx_reply_page(req, items, total);
}

static void users_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    const char *role = rx_req_query(req, "role");
    const char *status = rx_req_query(req, "status");
    const char *search = rx_req_query(req, "search");
    const char *deleted = rx_req_query(req, "deleted");
    json_t *errs = json_object();
    if (role != NULL && *role == '\0')
        role = NULL;
    if (status != NULL && *status == '\0')
        status = NULL;
    if (search != NULL && *search == '\0')
        search = NULL;
    if (role != NULL && !rbac_role_valid(role))
        rbac_err(
            errs, "role",
            rx_req_sprintf(
                req, "Select a valid choice. %.100s is not one of the available choices.", role));
    if (status != NULL && !status_valid(status))
        rbac_err(
            errs, "status",
            rx_req_sprintf(
                req, "Select a valid choice. %.100s is not one of the available choices.", status));
    if (search != NULL && strlen(search) > 255)
        rbac_err(errs, "search", "Ensure this field has no more than 255 characters.");
    bool with_deleted =
        deleted != NULL &&
        (strcmp(deleted, "true") == 0 || strcmp(deleted, "True") == 0 || strcmp(deleted, "1") == 0);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    rx_list *l = rx_list_new(req, RBAC_USER_COLS, "users u");
    if (role != NULL)
        rx_list_where(l, "u.role = $?::text", RX_TEXT(role));
    if (status != NULL)
        rx_list_where(l, "u.status = $?::text", RX_TEXT(status));
    if (search != NULL)
        rx_list_where(l,
                      "(strpos(lower(u.username), lower($?::text)) > 0"
                      " OR strpos(lower(u.email), lower($?::text)) > 0"
                      " OR strpos(u.phone, $?::text) > 0)",
                      RX_TEXT(search));
    if (!with_deleted)
        rx_list_where(l, "u.deleted_at IS NULL", RX_NULL);
    rx_list_order(l, NULL, 0, "u.id");
    if (rx_list_run(l, listed, limit, offset) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

/* ---- create ---- */

static void created(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        reply_write_error(req, rows);
        return;
    }
    rx_reply_json(req, 201, ident_user_json(req, rows, 0));
}

static void create_write(rx_req *req)
{
    uctx *c = ctx(req);
    rx_db(req, created,
          "WITH ins AS (INSERT INTO users (username, email, phone, password_hash, role, status,"
          "                                pharmacy_id)"
          "             VALUES ($3::text, $4::text, $5::text, $6::text, $7::text, $8::text,"
          "                     $9::bigint) RETURNING *),"
          " au AS (" AUDIT_INSERT "        SELECT id, 'USER_CREATED', $1::text, $2::text,"
          "               rbac_audit_meta(email, phone, $10::bigint)"
          "                 || jsonb_build_object('role', role, 'status', status,"
          "                                       'pharmacy', pharmacy_id),"
          "               $10::bigint FROM ins RETURNING 1)"
          " SELECT " RBAC_USER_COLS " FROM ins u",
          RX_TEXT(rbac_ip(req)), RX_TEXT(rbac_ua(req)), RX_TEXT(c->username),
          RX_TEXT(c->email ? c->email : ""), RX_TEXT(c->phone ? c->phone : ""), RX_TEXT(c->hash),
          RX_TEXT(c->role), RX_TEXT(c->status), c->pharmacy > 0 ? RX_INT(c->pharmacy) : RX_NULL,
          RX_INT(actor(req)));
}

static void users_create(rx_req *req)
{
    uctx *c = ctx(req);
    if (read_body(req, c, true) != 0)
        return;
    with_hash(req, c, create_write);
}

/* ---- detail ---- */

static int target(rx_req *req, uctx *c)
{
    if (rx_req_param_id(req, "id", &c->id) != 0) {
        reply_not_found(req);
        return -1;
    }
    return 0;
}

static void got(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    rx_reply_json(req, 200, ident_user_json(req, rows, 0));
}

static void users_get(rx_req *req)
{
    uctx *c = ctx(req);
    if (target(req, c) != 0)
        return;
    /* Deleted users too: the admin panel shows them to restore them. */
    rx_db(req, got, "SELECT " RBAC_USER_COLS " FROM users u WHERE u.id = $1", RX_INT(c->id));
}

/* ---- update ---- */

static void updated(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        reply_write_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    if (bool_flag(rows, "last_sa")) {
        reply_last_super_admin(req);
        return;
    }
    if (bool_flag(rows, "bad_pharmacy")) {
        uctx *c = ctx(req);
        rx_reply_invalid_field(req, "pharmacy",
                               c->ph_set && c->pharmacy > 0
                                   ? "Only a pharmacy admin has a pharmacy."
                                   : "A pharmacy admin must have a pharmacy.");
        return;
    }
    if (bool_flag(rows, "bad_ident")) {
        rx_reply_invalid_field(req, "non_field_errors", "Either phone or email is required.");
        return;
    }
    bool off = bool_flag(rows, "went_off"), on = bool_flag(rows, "went_on");
    ctx(req)->ended = bool_flag(rows, "ended");
    finish(req, 200, ident_user_json(req, rows, 0), off || on, off);
}

static void update_write(rx_req *req)
{
    uctx *c = ctx(req);
    rx_db(req, updated, rbac_update_sql, RX_TEXT(rbac_ip(req)), RX_TEXT(rbac_ua(req)),
          RX_INT(c->id), RX_INT(actor(req)), RX_TEXT(c->username), RX_TEXT(c->email),
          RX_TEXT(c->phone), RX_TEXT(c->password ? c->hash : NULL), RX_TEXT(c->role),
          RX_TEXT(c->status), RX_BOOL(c->ph_set), c->pharmacy > 0 ? RX_INT(c->pharmacy) : RX_NULL,
          RX_NULL);
}

static void users_update(rx_req *req)
{
    uctx *c = ctx(req);
    if (target(req, c) != 0 || read_body(req, c, false) != 0)
        return;
    with_hash(req, c, update_write);
}

/* ---- delete (soft) ---- */

static void deleted(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    if (bool_flag(rows, "last_sa")) {
        reply_last_super_admin(req);
        return;
    }
    ctx(req)->ended = bool_flag(rows, "done");
    finish(req, 204, NULL, true, true);
}

static void users_delete(rx_req *req)
{
    uctx *c = ctx(req);
    if (target(req, c) != 0)
        return;
    rx_db(req, deleted,
          "WITH" SUPER_ADMINS_LOCKED " o AS (SELECT u.id, u.role, u.status FROM users u"
          "        WHERE u.id = $3::bigint AND u.deleted_at IS NULL"
          "          AND (SELECT count(*) FROM sa) >= 0 FOR UPDATE),"
          " c AS (SELECT o.*, o.role = 'SUPER_ADMIN' AND o.status = 'ACTIVE'"
          "                   AND NOT EXISTS (SELECT 1 FROM sa WHERE sa.id <> o.id) AS last_sa"
          "         FROM o),"
          " upd AS (UPDATE users u SET deleted_at = now(), tokens_valid_after = now(),"
          "                            token_generation = u.token_generation + 1,"
          "                            updated_at = now()"
          "          FROM c WHERE u.id = c.id AND NOT c.last_sa"
          "         RETURNING u.id, u.email, u.phone),"
          " rt AS (UPDATE refresh_tokens t SET revoked_at = now() FROM upd"
          "         WHERE t.user_id = upd.id AND t.revoked_at IS NULL RETURNING 1),"
          " au AS (" AUDIT_INSERT "        SELECT id, 'USER_DELETED', $1::text, $2::text,"
          "               rbac_audit_meta(email, phone, $4::bigint), $4::bigint"
          "          FROM upd RETURNING 1)"
          " SELECT c.last_sa, upd.id IS NOT NULL AS done FROM c LEFT JOIN upd ON upd.id = c.id",
          RX_TEXT(rbac_ip(req)), RX_TEXT(rbac_ua(req)), RX_INT(c->id), RX_INT(actor(req)));
}

/* ---- restore ---- */

static void restored(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    /* Restoring a user who was not deleted changes nothing (idempotent). */
    finish(req, 200, ident_user_json(req, rows, 0), bool_flag(rows, "restored"), false);
}

static void users_restore(rx_req *req)
{
    uctx *c = ctx(req);
    if (target(req, c) != 0)
        return;
    rx_db(req, restored,
          "WITH o AS (SELECT u.id, u.deleted_at FROM users u WHERE u.id = $3::bigint FOR UPDATE),"
          " upd AS (UPDATE users u SET deleted_at = NULL, updated_at = now()"
          "          FROM o WHERE u.id = o.id AND o.deleted_at IS NOT NULL RETURNING u.*),"
          " au AS (" AUDIT_INSERT "        SELECT id, 'USER_RESTORED', $1::text, $2::text,"
          "               rbac_audit_meta(email, phone, $4::bigint), $4::bigint"
          "          FROM upd RETURNING 1)"
          " SELECT " RBAC_USER_COLS ", true AS restored FROM upd u"
          " UNION ALL"
          " SELECT " RBAC_USER_COLS ", false FROM users u JOIN o ON o.id = u.id"
          "  WHERE o.deleted_at IS NULL",
          RX_TEXT(rbac_ip(req)), RX_TEXT(rbac_ua(req)), RX_INT(c->id), RX_INT(actor(req)));
}

/* ---- routes ---- */

static const char create_schema[] =
    "{\"type\":\"object\",\"required\":[\"password\"],\"properties\":{"
    "\"username\":{\"type\":\"string\",\"maxLength\":150},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},\"phone\":{\"type\":\"string\"},"
    "\"password\":{\"type\":\"string\"},"
    "\"role\":{\"enum\":[\"SUPER_ADMIN\",\"PHARMACY_ADMIN\",\"DOCTOR\",\"REGISTERED_USER\"]},"
    "\"status\":{\"enum\":[\"ACTIVE\",\"INACTIVE\",\"LOCKED\",\"PENDING_VERIFICATION\"]},"
    "\"is_active\":{\"type\":\"boolean\"},\"pharmacy\":{\"type\":[\"integer\",\"null\"]}}}";
static const char update_schema[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"username\":{\"type\":\"string\",\"maxLength\":150},"
    "\"email\":{\"type\":\"string\"},\"phone\":{\"type\":\"string\"},"
    "\"password\":{\"type\":\"string\",\"description\":\"empty keeps the current one\"},"
    "\"role\":{\"enum\":[\"SUPER_ADMIN\",\"PHARMACY_ADMIN\",\"DOCTOR\",\"REGISTERED_USER\"]},"
    "\"status\":{\"enum\":[\"ACTIVE\",\"INACTIVE\",\"LOCKED\",\"PENDING_VERIFICATION\"]},"
    "\"is_active\":{\"type\":\"boolean\"},\"pharmacy\":{\"type\":[\"integer\",\"null\"]}}}";

int rbac_users_routes(rx_module *m)
{
    static const char *const prefixes[] = {"/api/admin/users/", "/api/auth/admin/users/"};
    int rc = rx_schema(m, "AdminUserCreate", create_schema);
    rc |= rx_schema(m, "AdminUserUpdate", update_schema);
    for (int i = 0; i < 2; i++) {
        const char *p = prefixes[i];
        char path[96];
        /* Every credential kind: an API key gets 403 from the matrix, as the
         * contract says, not a 401 for a kind the route ignores. */
        rx_route_opts o = {.perm = "users.manage", .list_style = RX_LIST_ENVELOPE, .tag = "admin"};
        o.summary = "List users (super admin)";
        o.response_schema = "[]AuthUser";
        rc |= rx_route(m, RX_GET, p, users_list, &o);
        o.summary = "Create a user (super admin)";
        o.request_schema = "AdminUserCreate";
        o.response_schema = "AuthUser";
        o.success_status = 201;
        rc |= rx_route(m, RX_POST, p, users_create, &o);
        snprintf(path, sizeof path, "%s{id}/", p);
        o.success_status = 0;
        o.request_schema = NULL;
        o.summary = "A user (super admin)";
        rc |= rx_route(m, RX_GET, path, users_get, &o);
        o.summary = "Change a user: role, status, pharmacy, identifiers, password (super admin)";
        o.request_schema = "AdminUserUpdate";
        rc |= rx_route(m, RX_PUT | RX_PATCH, path, users_update, &o);
        o.request_schema = NULL;
        o.response_schema = NULL;
        o.success_status = 204;
        o.summary = "Soft-delete a user (super admin)";
        rc |= rx_route(m, RX_DELETE, path, users_delete, &o);
        snprintf(path, sizeof path, "%s{id}/restore/", p);
        o.success_status = 0;
        o.response_schema = "AuthUser";
        o.summary = "Restore a soft-deleted user (super admin)";
        rc |= rx_route(m, RX_POST, path, users_restore, &o);
    }
    return rc;
}
