/*
 * me.c — GET/PUT/PATCH /api/auth/me/. Updates are always partial (the old
 * backend's PUT was too). A new e-mail or phone is never applied unproven:
 * it gets a code and a "pending_verification" answer; sent again with that
 * code ({email or phone, otp}) it is applied and marked verified. Other
 * fields in the same body are applied either way: with a new identifier and
 * no code, after every check that can refuse (validation, identifier or
 * username taken, the per-address send limit), then the code is sent and the
 * pending answer carries the updated user. The old frontend's profile form
 * sends the whole form, the current e-mail and phone included: an identifier
 * equal to the user's own (normalised as the identifier parser does, e-mail
 * ignoring case) is no change, except when it comes alone and is still
 * unverified (a code to prove it, as before). role, status and pharmacy in a
 * body are ignored.
 */
#include "auth.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void send_pending(rx_req *req, json_t *user);

static void reply_user(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        auth_ctx *c = auth_ctx_get(req);
        if (c->picture_name[0])
            auth_picture_remove(c->picture_name);
        auth_reply_unique(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    const char *old = rx_rows_text(rows, 0, rx_rows_column(rows, "old_picture"));
    auth_ctx *c = auth_ctx_get(req);
    if (c->picture_name[0] && old != NULL && strcmp(old, c->picture_name) != 0)
        auth_picture_remove(old);
    if (c->send_code) {
        send_pending(req, ident_user_json(req, rows, 0));
        return;
    }
    rx_reply_json(req, 200, ident_user_json(req, rows, 0));
}

void auth_me_get(rx_req *req)
{
    rx_db(req, reply_user,
          "SELECT " AUTH_USER_COLS " FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL",
          RX_INT(rx_req_principal(req)->user_id));
}

/* ---- update ---- */

static bool valid_date(const char *s)
{
    int y, m, d;
    char tail;
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || s[4] != '-' ||
        s[7] != '-')
        return false;
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days[m - 1])
        return false;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return false;
    return true;
}

static void apply(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    const char *email = c->kind == AUTH_EMAIL && c->otp ? c->ident : NULL;
    const char *phone = c->kind == AUTH_PHONE && c->otp ? c->ident : NULL;
    bool dob_set = c->dob != NULL;
    rx_db(req, reply_user,
          "UPDATE users u SET"
          "  username = COALESCE($2, u.username),"
          "  address = COALESCE($3, u.address),"
          "  gender = COALESCE($4, u.gender),"
          "  date_of_birth = CASE WHEN $5::bool THEN $6::date ELSE u.date_of_birth END,"
          "  profile_picture = COALESCE($7, u.profile_picture),"
          "  email = COALESCE($8, u.email),"
          "  email_verified = u.email_verified AND $8::text IS NULL OR $8::text IS NOT NULL,"
          "  phone = COALESCE($9, u.phone),"
          "  phone_verified = u.phone_verified AND $9::text IS NULL OR $9::text IS NOT NULL,"
          "  updated_at = now()"
          " WHERE u.id = $1 AND u.deleted_at IS NULL"
          " RETURNING " AUTH_USER_COLS ","
          "  (SELECT o.profile_picture FROM users o WHERE o.id = $1) AS old_picture",
          RX_INT(rx_req_principal(req)->user_id), RX_TEXT(c->username), RX_TEXT(c->address),
          RX_TEXT(c->gender), RX_BOOL(dob_set), RX_TEXT(dob_set && *c->dob ? c->dob : NULL),
          RX_TEXT(c->picture_name[0] ? c->picture_name : NULL), RX_TEXT(email), RX_TEXT(phone));
}

static void stored_work(void *arg)
{
    auth_ctx *c = arg;
    c->ok = auth_picture_store(c) == 0;
}

static void stored_done(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    if (!c->ok) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    apply(req);
}

static void apply_or_store(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (c->picture != NULL) {
        if (rx_offload(req, stored_work, stored_done, c) != 0)
            rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    apply(req);
}

/* ---- pending e-mail/phone change ---- */

static void pending_sent(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    char masked[300];
    auth_mask(c->kind, c->ident, masked, sizeof masked);
    bool ph = c->kind == AUTH_PHONE;
    json_t *body = json_pack(
        "{s:b, s:s, s:s, s:s, s:o}", "pending_verification", 1, "message",
        ph ? "Verification code sent to your new phone number."
           : "Verification code sent to your new email.",
        "detail", ph ? "Check your phone for the code." : "Check your email for the code.",
        "identifier_masked", masked, "user", c->pending ? c->pending : json_null());
    c->pending = NULL;
    rx_reply_json(req, 200, body);
}

/* The code to c->ident, then the pending answer with `user` (reference
 * stolen). After the other fields were written (send_code), a failure here
 * (Redis down: 503; the notify job not enqueued: the SDK's database answer)
 * reaches the client as that error although the other fields are saved:
 * a GET shows them, and sending the same body again changes nothing more
 * and sends the code (one more of the address's sends per hour). */
static void send_pending(rx_req *req, json_t *user)
{
    auth_ctx *c = auth_ctx_get(req);
    json_decref(c->pending);
    c->pending = user;
    auth_otp_send(req, c, "OTP_SENT", pending_sent);
}

static void pending_limited(rx_req *req, int err, const rx_ratelimit_result *res)
{
    auth_ctx *c = auth_ctx_get(req);
    if (err != 0) {
        json_decref(c->pending);
        c->pending = NULL;
        rx_reply_unavailable(req, 0);
        return;
    }
    if (!res->allowed) {
        json_decref(c->pending);
        c->pending = NULL;
        rx_reply_throttled(req, res->retry_after_s, "otp_rate_limit",
                           "Too many OTP requests. Please try again later.");
        return;
    }
    /* Every check passed: write the other fields (the code follows in
     * reply_user), or, with none, send the code at once. */
    if (c->send_code) {
        apply_or_store(req);
        return;
    }
    auth_otp_send(req, c, "OTP_SENT", pending_sent);
}

static bool has_flag(const rx_rows *rows, const char *name)
{
    bool v = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, name), &v);
    return v;
}

/* The user's row is read: decide what the identifiers in the body mean. */
static void identifiers_checked(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    if (rx_rows_count(rows) != 1) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    const char *cur_email = rx_rows_text(rows, 0, rx_rows_column(rows, "email"));
    const char *cur_phone = rx_rows_text(rows, 0, rx_rows_column(rows, "phone"));
    bool same_email = c->email[0] && cur_email != NULL && strcasecmp(cur_email, c->email) == 0;
    bool same_phone = c->phone[0] && cur_phone != NULL && strcmp(cur_phone, c->phone) == 0;
    bool others = c->username || c->address || c->gender || c->dob || c->picture;
    bool email = c->email[0] != '\0', phone = c->phone[0] != '\0';
    if (email && phone) {
        /* The whole form: the unchanged one is no change. */
        email = email && !same_email;
        phone = phone && !same_phone;
        if (email && phone) {
            rx_reply_invalid_field(req, "non_field_errors",
                                   "Provide either phone or email, not both.");
            return;
        }
    } else if (c->otp == NULL && (same_email || same_phone)) {
        /* One identifier, the user's own: no change, unless it comes alone
         * and is unverified, which asks for a code to prove it (as it always
         * did). With a code it is proven and marked verified, as before. */
        bool verified = false;
        rx_rows_bool(rows, 0,
                     rx_rows_column(rows, same_email ? "email_verified" : "phone_verified"),
                     &verified);
        if (others || verified)
            email = phone = false;
    }
    if (!email && !phone) {
        c->kind = AUTH_NONE;
        c->otp = NULL;
        apply_or_store(req);
        return;
    }
    c->kind = email ? AUTH_EMAIL : AUTH_PHONE;
    snprintf(c->ident, sizeof c->ident, "%s", email ? c->email : c->phone);
    if (c->otp != NULL) {
        /* A taken identifier is the UPDATE's unique violation, after the
         * code, as before. */
        auth_otp_check(req, c, apply_or_store);
        return;
    }
    if (has_flag(rows, email ? "email_taken" : "phone_taken")) {
        rx_reply_invalid_field(req, email ? "email" : "phone",
                               email ? "user with this email already exists."
                                     : "user with this phone already exists.");
        return;
    }
    /* Refused before a code is counted or anything written; a race with
     * another user taking the name is still the UPDATE's unique violation. */
    if (has_flag(rows, "username_taken")) {
        rx_reply_invalid_field(req, "username", "A user with that username already exists.");
        return;
    }
    c->send_code = others;
    if (!others)
        c->pending = ident_user_json(req, rows, 0);
    c->user_id = rx_req_principal(req)->user_id;
    char key[300];
    snprintf(key, sizeof key, "auth:otp_send:%s", c->ident);
    for (char *p = key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (rx_ratelimit(req, rx_req_strdup(req, key), (int)auth_cfg.otp_sends_per_hour, 3600,
                     pending_limited) != 0) {
        json_decref(c->pending);
        c->pending = NULL;
        rx_reply_unavailable(req, 0);
    }
}

/* One of phone/email, normalised into out (left "" when absent or blank). */
static void identifier(auth_ctx *c, const char *name, json_t *errs, char *out, size_t outlen)
{
    const char *v = auth_str(c, name, errs, 255);
    if (v == NULL || *v == '\0')
        return;
    bool ph = strcmp(name, "phone") == 0;
    if ((ph ? ident_norm_phone(v, out, outlen) : ident_norm_email(v, out, outlen)) != 0) {
        out[0] = '\0';
        auth_err(errs, name, ph ? "Enter a valid phone number." : "Enter a valid email address.");
    }
}

void auth_me_update(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, true) != 0)
        return;
    json_t *errs = json_object();
    const char *username = auth_str(c, "username", errs, 400);
    if (username != NULL) {
        while (isspace((unsigned char)*username))
            username++;
        size_t n = strlen(username);
        while (n > 0 && isspace((unsigned char)username[n - 1]))
            n--;
        if (n == 0)
            auth_err(errs, "username", "This field may not be blank.");
        else if (n > 150)
            auth_err(errs, "username", "Ensure this field has no more than 150 characters.");
        else
            c->username = rx_req_sprintf(req, "%.*s", (int)n, username);
    }
    c->address = auth_str(c, "address", errs, 500);
    const char *g = auth_str(c, "gender", errs, 255);
    if (g != NULL) {
        if (*g == '\0' || strcmp(g, "MALE") == 0 || strcmp(g, "FEMALE") == 0 ||
            strcmp(g, "OTHER") == 0)
            c->gender = g;
        else {
            char m[300];
            snprintf(m, sizeof m, "\"%s\" is not a valid choice.", g);
            auth_err(errs, "gender", m);
        }
    }
    /* "" means unset; null too (JSON null reads as absent, so handle it). */
    json_t *dj = c->body ? json_object_get(c->body, "date_of_birth") : NULL;
    const char *dob = auth_str(c, "date_of_birth", errs, 255);
    if (dob != NULL && *dob != '\0' && !valid_date(dob))
        auth_err(errs, "date_of_birth",
                 "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.");
    else if (dob != NULL)
        c->dob = dob;
    else if (dj != NULL && json_is_null(dj))
        c->dob = "";
    if (c->parts != NULL) {
        const rx_part *p = rx_part_get(c->parts, c->nparts, "profile_picture");
        if (p != NULL && p->filename != NULL && p->len > 0) {
            const char *why = auth_picture_check(p);
            if (why != NULL)
                auth_err(errs, "profile_picture", why);
            else
                c->picture = p;
        }
    }
    /* E-mail and phone: which of them is a change needs the user's row. */
    identifier(c, "phone", errs, c->phone, sizeof c->phone);
    identifier(c, "email", errs, c->email, sizeof c->email);
    c->otp = auth_str(c, "otp", errs, 255);
    if (c->otp != NULL && *c->otp == '\0')
        c->otp = NULL;
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    if (c->email[0] == '\0' && c->phone[0] == '\0') {
        apply_or_store(req);
        return;
    }
    rx_db(req, identifiers_checked,
          "SELECT " AUTH_USER_COLS ","
          "  $2::text <> '' AND EXISTS (SELECT 1 FROM users o WHERE o.id <> u.id"
          "      AND o.email <> '' AND lower(o.email) = lower($2)) AS email_taken,"
          "  $3::text <> '' AND EXISTS (SELECT 1 FROM users o WHERE o.id <> u.id"
          "      AND o.phone = $3) AS phone_taken,"
          "  $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM users o WHERE o.id <> u.id"
          "      AND lower(o.username) = lower($4)) AS username_taken"
          " FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL",
          RX_INT(rx_req_principal(req)->user_id), RX_TEXT(c->email), RX_TEXT(c->phone),
          RX_TEXT(c->username));
}
