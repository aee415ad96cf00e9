/*
 * identity.h — rules about people's identifiers and passwords that more than
 * one module applies (auth registers and logs users in, rbac's admins create
 * and edit them): one definition, compiled into each module that needs it
 * (modules are separate shared objects loaded RTLD_LOCAL, so they cannot call
 * each other's code).
 */
#ifndef RX_MODULES_IDENTITY_H
#define RX_MODULES_IDENTITY_H

#include <rx.h>

#include <stdbool.h>
#include <stddef.h>

/* Bangladesh spellings and any E.164 number -> "+<digits>" in out. 0 or -1. */
int ident_norm_phone(const char *in, char *out, size_t outlen);
/* local@domain.tld with the domain lower-cased, as Django's normalize_email. 0 or -1. */
int ident_norm_email(const char *in, char *out, size_t outlen);
/* The contract's password rules; appends one message per broken rule to
 * errs[field] and returns true when none was broken. */
bool ident_password_rules(const char *pw, json_t *errs, const char *field);

/* The user object of API.md ("User object") from row `row` of a SELECT of the
 * users table (columns by name: id, username, email, phone, profile_picture,
 * address, role, status, email_verified, phone_verified, created_at, gender,
 * date_of_birth, pharmacy_id). `req` (may be NULL) gives the host for the
 * picture's absolute URL. New reference. */
json_t *ident_user_json(rx_req *req, const rx_rows *r, int row);

#endif
