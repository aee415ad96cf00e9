/*
 * migrate.c — schema migrations: what modules registered (rx_migrations), the
 * `rxd migrate [--status]` command, serve's start-up check and the readiness
 * flag behind /readyz.
 *
 * Each module's NNN_name.sql files are compiled into it (cmake/Migrations.cmake)
 * and registered from init; the kernel's own come from kernel/migrations/ as
 * kernel_migrations[] and always run first. Applying happens on the main thread
 * before any worker starts, so the blocking libpq API is used throughout.
 *
 * Safety rules, all enforced here:
 *  - one `rxd migrate` at a time across every instance: a session advisory lock
 *    (a second one waits, then finds nothing left to do);
 *  - each migration runs in its own transaction together with the row that
 *    records it, so a migration is either applied and recorded, or neither;
 *  - an applied migration is immutable: its SHA-256 is recorded and compared
 *    on every run; one that changed, disappeared, or a new one numbered below
 *    an applied one is an error, because the schema would no longer be what
 *    the files describe.
 */
#include "kn_data.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Generated from the .sql files of kernel/migrations (may hold only the terminator). */
extern const rx_migration kernel_migrations[];

/* The advisory lock key: "rxmigrat" as a big-endian 64-bit integer. Fixed so
 * every rxd binary, whatever its version, contends for the same lock. */
#define MIGRATE_LOCK_KEY "8248463017003606388"

#define TRACK_TABLE_SQL                                                                            \
    "CREATE TABLE IF NOT EXISTS rx_schema_migrations ("                                            \
    " module text NOT NULL,"                                                                       \
    " version int NOT NULL,"                                                                       \
    " name text NOT NULL,"                                                                         \
    " checksum text NOT NULL,"                                                                     \
    " applied_at timestamptz NOT NULL DEFAULT now(),"                                              \
    " PRIMARY KEY (module, version))"

/* applied_at as ISO 8601 UTC text, so output never depends on the session. */
#define APPLIED_ROWS_SQL                                                                           \
    "SELECT module, version, name, checksum,"                                                      \
    " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"                    \
    " FROM rx_schema_migrations ORDER BY module, version"

typedef struct mig_set {
    const kn_module *module; /* NULL = the kernel */
    const rx_migration *list;
    size_t n;
} mig_set;

static struct {
    mig_set *v;
    size_t n, cap;
} sets;

/* Set once the start-up check (pending or apply) succeeded; read by /readyz on
 * worker threads, hence atomic, and never a query per call. */
static atomic_bool checked_ok;

static void seterr(char *err, size_t len, const char *fmt, ...) RX_PRINTF(3, 4);
static void seterr(char *err, size_t len, const char *fmt, ...)
{
    if (err == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

static const char *set_name(const mig_set *s)
{
    return s->module ? s->module->desc->name : "kernel";
}

static size_t list_len(const rx_migration *list)
{
    size_t n = 0;
    while (list[n].version != 0)
        n++;
    return n;
}

/* ------------------------------------------------------------------ */
/* registration                                                        */
/* ------------------------------------------------------------------ */

static bool valid_name(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}


int rx_migrations(rx_module *m, const rx_migration *list)
{
    const kn_module *km = (const kn_module *)m;
    const char *who = km ? km->desc->name : "kernel";
    if (!kn_reg.open)
        return RX_ESTATE;
    if (list == NULL) {
        kn_reg_error("module '%s': rx_migrations: list is NULL", who);
        return RX_EINVAL;
    }
    if (km == NULL) {
        /* The kernel's list is built in (kernel_migrations, run first); only
         * that same list may be "registered" again, as a no-op. */
        if (list == kernel_migrations)
            return 0;
        kn_reg_error("kernel migrations come from kernel/migrations/, not rx_migrations()");
        return RX_EEXIST;
    }
    for (size_t i = 0; i < sets.n; i++)
        if (sets.v[i].module == km) {
            kn_reg_error("module '%s': rx_migrations called twice", who);
            return RX_EEXIST;
        }
    int prev = 0;
    size_t n = 0;
    for (; list[n].version != 0; n++) {
        const rx_migration *x = &list[n];
        if (x->version <= prev) {
            kn_reg_error("module '%s': migration %d comes after %d: versions must be > 0 and "
                      "strictly increasing",
                      who, x->version, prev);
            return RX_EINVAL;
        }
        if (!valid_name(x->name)) {
            kn_reg_error("module '%s': migration %d: name must be non-empty [a-z0-9_]", who,
                      x->version);
            return RX_EINVAL;
        }
        if (x->sql == NULL) {
            kn_reg_error("module '%s': migration %03d_%s has no SQL", who, x->version, x->name);
            return RX_EINVAL;
        }
        prev = x->version;
    }
    if (n == 0)
        return 0; /* nothing to remember */
    if (sets.n == sets.cap) {
        size_t nc = sets.cap ? sets.cap * 2 : 8;
        mig_set *nv = realloc(sets.v, nc * sizeof(*nv));
        if (nv == NULL)
            return RX_ENOMEM;
        sets.v = nv;
        sets.cap = nc;
    }
    sets.v[sets.n++] = (mig_set){km, list, n};
    return 0;
}

void kn_migrate_free(void)
{
    free(sets.v);
    sets.v = NULL;
    sets.n = sets.cap = 0;
    atomic_store(&checked_ok, false);
}

/* The kernel's tables (jobs, ...) only matter when there is a database: an
 * rxd without database.url must still start, so then the kernel's own
 * migrations do not count. A module's migrations always do: that module
 * needs its tables. */
static size_t kernel_count(void)
{
    return kn_db_url() != NULL ? list_len(kernel_migrations) : 0;
}

/* Every loaded module in dependency order, the kernel first, each with its
 * migrations (n = 0 for a module that has none: its old rows are still
 * checked). Caller frees. */
static mig_set *ordered_sets(size_t *count, size_t *total)
{
    mig_set *v = calloc(kn_reg.modules.n + 1, sizeof(*v));
    if (v == NULL)
        return NULL;
    size_t k = 0;
    *total = 0;
    v[k++] = (mig_set){NULL, kernel_migrations, kernel_count()};
    *total += v[0].n;
    for (size_t i = 0; i < kn_reg.modules.n; i++) {
        const kn_module *m = kn_reg.modules.v[i];
        v[k] = (mig_set){m, NULL, 0};
        for (size_t j = 0; j < sets.n; j++)
            if (sets.v[j].module == m)
                v[k] = sets.v[j];
        *total += v[k].n;
        k++;
    }
    *count = k;
    return v;
}

/* ------------------------------------------------------------------ */
/* talking to the database                                             */
/* ------------------------------------------------------------------ */

static void checksum_hex(const char *sql, char out[crypto_hash_sha256_BYTES * 2 + 1])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)sql, strlen(sql));
    sodium_bin2hex(out, crypto_hash_sha256_BYTES * 2 + 1, h, sizeof(h));
}

/* The server's error text of a failed result, on one line. */
static const char *pg_message(const PGresult *res, const PGconn *c)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (m == NULL || *m == '\0')
        m = PQerrorMessage(c);
    return m;
}

/* Run one statement without result rows; -1 with err on failure. */
static int exec_cmd(PGconn *c, const char *sql, int nparams, const char *const *params,
                    const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        seterr(err, errlen, "%s: %s", what, pg_message(r, c));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

static PGconn *connect_db(size_t total, char *err, size_t errlen)
{
    if (kn_db_url() == NULL) {
        seterr(err, errlen, "database.url is not set (RXD_DATABASE_URL) and modules have %zu "
                            "migration%s",
               total, total == 1 ? "" : "s");
        return NULL;
    }
    /* Idempotent; picks libsodium's implementations before the checksums. */
    if (sodium_init() < 0) {
        seterr(err, errlen, "libsodium failed to initialise");
        return NULL;
    }
    char cerr[512] = "";
    PGconn *c = kn_db_connect_blocking(cerr, sizeof(cerr));
    if (c == NULL) {
        seterr(err, errlen, "%s", cerr); /* already says what failed */
        return NULL;
    }
    /* CREATE TABLE IF NOT EXISTS and friends send NOTICEs that libpq would
     * print on stderr at every run: only warnings are worth showing. */
    if (exec_cmd(c, "SET client_min_messages = warning", 0, NULL, "setting up the session", err,
                 errlen) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* The applied rows, or NULL with err. A missing tracking table reads as no
 * rows (a fresh database), without creating it: status and pending checks
 * must not write. */
static PGresult *applied_rows(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SELECT to_regclass('rx_schema_migrations') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        seterr(err, errlen, "reading rx_schema_migrations: %s", pg_message(r, c));
        PQclear(r);
        return NULL;
    }
    bool exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    /* Same columns either way, so callers need no special case. */
    r = PQexec(c, exists ? APPLIED_ROWS_SQL
                         : "SELECT NULL::text, NULL::int, NULL::text, NULL::text, NULL::text"
                           " WHERE false");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        seterr(err, errlen, "reading rx_schema_migrations: %s", pg_message(r, c));
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Row index of (module, version) in the applied rows, or -1. */
static int find_row(const PGresult *r, const char *module, int version)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (atoi(PQgetvalue(r, i, 1)) == version && strcmp(PQgetvalue(r, i, 0), module) == 0)
            return i;
    return -1;
}

static const rx_migration *find_mig(const mig_set *s, int version)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->list[i].version == version)
            return &s->list[i];
    return NULL;
}

/* Check the applied rows against the embedded migrations of every loaded
 * module: 0, or -1 with the first problem in err. */
static int verify(const mig_set *v, size_t count, const PGresult *rows, char *err, size_t errlen)
{
    for (size_t k = 0; k < count; k++) {
        const mig_set *s = &v[k];
        const char *mod = set_name(s);
        int max_applied = 0;
        for (int i = 0; i < PQntuples(rows); i++) {
            if (strcmp(PQgetvalue(rows, i, 0), mod) != 0)
                continue;
            int ver = atoi(PQgetvalue(rows, i, 1));
            const char *at = PQgetvalue(rows, i, 4);
            const rx_migration *m = find_mig(s, ver);
            if (m == NULL) {
                seterr(err, errlen,
                       "module '%s' migration %03d_%s was applied on %s but the module no longer "
                       "has it (applied migrations must never be removed)",
                       mod, ver, PQgetvalue(rows, i, 2), at);
                return -1;
            }
            char sum[crypto_hash_sha256_BYTES * 2 + 1];
            checksum_hex(m->sql, sum);
            if (strcmp(sum, PQgetvalue(rows, i, 3)) != 0) {
                seterr(err, errlen,
                       "module '%s' migration %03d_%s: checksum changed since it was applied on "
                       "%s (applied migrations must never be edited; add a new one)",
                       mod, ver, m->name, at);
                return -1;
            }
            if (ver > max_applied)
                max_applied = ver;
        }
        /* A pending migration numbered below an applied one would run after
         * the later ones, on a schema its author never saw. */
        for (size_t i = 0; i < s->n; i++)
            if (s->list[i].version < max_applied && find_row(rows, mod, s->list[i].version) < 0) {
                seterr(err, errlen,
                       "module '%s' migration %03d_%s is not applied but %03d is: a new "
                       "migration must be numbered after every applied one",
                       mod, s->list[i].version, s->list[i].name, max_applied);
                return -1;
            }
    }
    return 0;
}

/* 1-based line of a 1-based character position in sql (the server counts
 * characters, not bytes: UTF-8 continuation bytes are skipped). */
static int line_of(const char *sql, long pos)
{
    int line = 1;
    long chars = 0;
    for (const unsigned char *p = (const unsigned char *)sql; *p && chars < pos - 1; p++) {
        if ((*p & 0xc0) == 0x80)
            continue;
        chars++;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* Apply one migration in its own transaction with its tracking row. */
static int apply_one(PGconn *c, const char *mod, const rx_migration *m, char *err, size_t errlen)
{
    char what[160];
    snprintf(what, sizeof(what), "module '%s' migration %03d_%s", mod, m->version, m->name);
    if (exec_cmd(c, "BEGIN", 0, NULL, what, err, errlen) != 0)
        return -1;
    /* PQexec: the simple query protocol runs a file of several statements. */
    PGresult *r = PQexec(c, m->sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        char where[48] = "";
        const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
        if (pos != NULL)
            snprintf(where, sizeof(where), " (line %d)", line_of(m->sql, atol(pos)));
        const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
        seterr(err, errlen, "%s failed%s: %s%s%s", what, where, pg_message(r, c),
               detail ? "; " : "", detail ? detail : "");
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    PQclear(r);
    if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
        /* Its own COMMIT/ROLLBACK broke the all-or-nothing promise: what it
         * did may be committed, but it is not recorded. */
        seterr(err, errlen,
               "%s ended the transaction itself (COMMIT or ROLLBACK in the file): it was not "
               "recorded; remove the transaction control from the file",
               what);
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    char sum[crypto_hash_sha256_BYTES * 2 + 1], ver[16];
    checksum_hex(m->sql, sum);
    snprintf(ver, sizeof(ver), "%d", m->version);
    const char *params[] = {mod, ver, m->name, sum};
    if (exec_cmd(c,
                 "INSERT INTO rx_schema_migrations (module, version, name, checksum)"
                 " VALUES ($1, $2::int, $3, $4)",
                 4, params, what, err, errlen) != 0 ||
        exec_cmd(c, "COMMIT", 0, NULL, what, err, errlen) != 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* apply / pending / status                                            */
/* ------------------------------------------------------------------ */

/* Apply every pending migration. cli: progress as plain lines on stdout
 * (`rxd migrate`); otherwise as log lines (serve --migrate logs JSON). */
static int apply_all(bool cli, char *err, size_t errlen)
{
    size_t count, total;
    mig_set *v = ordered_sets(&count, &total);
    if (v == NULL) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    if (total == 0 && kn_db_url() == NULL) {
        /* Nothing to apply and nowhere to check: serving without a database is fine. */
        free(v);
        if (cli)
            printf("nothing to migrate: no loaded module has migrations and no database is "
                   "configured\n");
        atomic_store(&checked_ok, true);
        return 0;
    }
    int rc = -1, applied = 0;
    const char *key[] = {MIGRATE_LOCK_KEY};
    PGresult *rows = NULL;
    PGconn *c = connect_db(total, err, errlen);
    if (c == NULL)
        goto out;
    PGresult *r = PQexecParams(c, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, key, NULL,
                               NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        seterr(err, errlen, "taking the migration lock: %s", pg_message(r, c));
        PQclear(r);
        goto out;
    }
    bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        /* Another instance is migrating: wait for it, then find what is left. */
        if (cli)
            fprintf(stderr, "rxd migrate: waiting for another migration to finish\n");
        else
            kn_log(RX_LOG_INFO, NULL, "waiting for another instance's migrations to finish");
        if (exec_cmd(c, "SELECT pg_advisory_lock($1::bigint)", 1, key, "taking the migration lock",
                     err, errlen) != 0)
            goto out;
    }
    /* Under the lock, so two first runs do not race on creating it. */
    if (exec_cmd(c, TRACK_TABLE_SQL, 0, NULL, "creating rx_schema_migrations", err, errlen) != 0)
        goto unlock;
    rows = applied_rows(c, err, errlen);
    if (rows == NULL || verify(v, count, rows, err, errlen) != 0)
        goto unlock;
    for (size_t k = 0; k < count; k++) {
        const char *mod = set_name(&v[k]);
        for (size_t i = 0; i < v[k].n; i++) {
            const rx_migration *m = &v[k].list[i];
            if (find_row(rows, mod, m->version) >= 0)
                continue;
            if (apply_one(c, mod, m, err, errlen) != 0)
                goto unlock;
            applied++;
            if (cli) {
                printf("module %s: applied %03d_%s\n", mod, m->version, m->name);
                fflush(stdout);
            } else {
                kn_log(RX_LOG_INFO, NULL, "module %s: applied migration %03d_%s", mod,
                       m->version, m->name);
            }
        }
    }
    rc = 0;
    if (cli && applied > 0)
        printf("%d migration%s applied\n", applied, applied == 1 ? "" : "s");
    else if (cli)
        printf("nothing to apply: all %zu migration%s applied\n", total,
               total == 1 ? " is" : "s are");
unlock:
    PQclear(PQexecParams(c, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, key, NULL, NULL, 0));
out:
    if (rows)
        PQclear(rows);
    if (c)
        PQfinish(c);
    free(v);
    if (rc == 0)
        atomic_store(&checked_ok, true);
    return rc;
}

int kn_migrate_apply(char *err, size_t errlen)
{
    return apply_all(false, err, errlen);
}

/* Append to err while it fits, keeping room for the tail. */
static void append(char *err, size_t errlen, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n < errlen) {
        memcpy(err + *len, s, n + 1);
        *len += n;
    }
}

int kn_migrate_pending(char *err, size_t errlen)
{
    size_t count, total;
    mig_set *v = ordered_sets(&count, &total);
    if (v == NULL) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    if (total == 0) {
        /* No migration anywhere: no database needed to say nothing is pending. */
        free(v);
        atomic_store(&checked_ok, true);
        return 0;
    }
    int rc = -1;
    PGresult *rows = NULL;
    PGconn *c = connect_db(total, err, errlen);
    if (c == NULL)
        goto out;
    rows = applied_rows(c, err, errlen);
    if (rows == NULL || verify(v, count, rows, err, errlen) != 0)
        goto out;
    static const char tail[] = " (run `rxd migrate` or start with `serve --migrate`)";
    size_t len = 0, npending = 0, listed = 0;
    if (err && errlen)
        err[0] = '\0';
    append(err, errlen, &len, "pending migrations:");
    for (size_t k = 0; k < count; k++)
        for (size_t i = 0; i < v[k].n; i++) {
            if (find_row(rows, set_name(&v[k]), v[k].list[i].version) >= 0)
                continue;
            npending++;
            char item[160];
            snprintf(item, sizeof(item), "%s %s %03d_%s", listed ? "," : "", set_name(&v[k]),
                     v[k].list[i].version, v[k].list[i].name);
            /* Leave room for the tail and a "... and N more" (~24 bytes); once
             * one does not fit, list no more, so the list stays in order. */
            if (err && listed + 1 == npending && len + strlen(item) + sizeof(tail) + 24 < errlen) {
                append(err, errlen, &len, item);
                listed++;
            }
        }
    if (npending == 0) {
        rc = 0;
        if (err && errlen)
            err[0] = '\0';
        goto out;
    }
    if (listed < npending) {
        char more[48];
        snprintf(more, sizeof(more), ", ... and %zu more", npending - listed);
        append(err, errlen, &len, more);
    }
    append(err, errlen, &len, tail);
    rc = 1;
out:
    if (rows)
        PQclear(rows);
    if (c)
        PQfinish(c);
    free(v);
    if (rc == 0)
        atomic_store(&checked_ok, true);
    return rc;
}

/* One line of `--status`: every embedded migration, plus applied rows the
 * module no longer has. */
typedef struct status_line {
    const char *module;
    char version[16];
    const char *name;
    const char *state;
    const char *applied_at;
} status_line;

static int status(void)
{
    char err[1024];
    size_t count, total;
    mig_set *v = ordered_sets(&count, &total);
    if (v == NULL) {
        fprintf(stderr, "rxd migrate: out of memory\n");
        return 1;
    }
    if (total == 0 && kn_db_url() == NULL) {
        printf("nothing to migrate: no loaded module has migrations and no database is "
               "configured\n");
        free(v);
        return 0;
    }
    int rc = 1;
    PGresult *rows = NULL;
    status_line *lines = NULL;
    PGconn *c = connect_db(total, err, sizeof(err));
    if (c == NULL || (rows = applied_rows(c, err, sizeof(err))) == NULL) {
        fprintf(stderr, "rxd migrate: %s\n", err);
        goto out;
    }
    lines = calloc(total + (size_t)PQntuples(rows) + 1, sizeof(*lines));
    if (lines == NULL)
        goto out;
    size_t n = 0;
    bool problems = false;
    for (size_t k = 0; k < count; k++) {
        const char *mod = set_name(&v[k]);
        for (size_t i = 0; i < v[k].n; i++) {
            const rx_migration *m = &v[k].list[i];
            status_line *l = &lines[n++];
            l->module = mod;
            snprintf(l->version, sizeof(l->version), "%03d", m->version);
            l->name = m->name;
            int row = find_row(rows, mod, m->version);
            l->state = "pending";
            l->applied_at = "";
            if (row >= 0) {
                char sum[crypto_hash_sha256_BYTES * 2 + 1];
                checksum_hex(m->sql, sum);
                bool same = strcmp(sum, PQgetvalue(rows, row, 3)) == 0;
                l->state = same ? "applied" : "CHANGED";
                l->applied_at = PQgetvalue(rows, row, 4);
                problems |= !same;
            }
        }
        for (int i = 0; i < PQntuples(rows); i++) {
            if (strcmp(PQgetvalue(rows, i, 0), mod) != 0 ||
                find_mig(&v[k], atoi(PQgetvalue(rows, i, 1))) != NULL)
                continue;
            status_line *l = &lines[n++];
            l->module = mod;
            snprintf(l->version, sizeof(l->version), "%03d", atoi(PQgetvalue(rows, i, 1)));
            l->name = PQgetvalue(rows, i, 2);
            l->state = "MISSING";
            l->applied_at = PQgetvalue(rows, i, 4);
            problems = true;
        }
    }
    int wm = (int)strlen("MODULE"), wv = (int)strlen("VERSION"), wn = (int)strlen("NAME"),
        ws = (int)strlen("STATE");
    for (size_t i = 0; i < n; i++) {
        wm = (int)strlen(lines[i].module) > wm ? (int)strlen(lines[i].module) : wm;
        wv = (int)strlen(lines[i].version) > wv ? (int)strlen(lines[i].version) : wv;
        wn = (int)strlen(lines[i].name) > wn ? (int)strlen(lines[i].name) : wn;
        ws = (int)strlen(lines[i].state) > ws ? (int)strlen(lines[i].state) : ws;
    }
    printf("%-*s  %-*s  %-*s  %-*s  %s\n", wm, "MODULE", wv, "VERSION", wn, "NAME", ws, "STATE",
           "APPLIED AT");
    for (size_t i = 0; i < n; i++) {
        /* No trailing blanks on pending lines: easier to read and to grep. */
        printf("%-*s  %-*s  %-*s  %-*s", wm, lines[i].module, wv, lines[i].version, wn,
               lines[i].name, *lines[i].applied_at ? ws : 0, lines[i].state);
        printf("%s%s\n", *lines[i].applied_at ? "  " : "", lines[i].applied_at);
    }
    if (problems) {
        /* The same wording as `rxd migrate` so the fix is spelled out once. */
        if (verify(v, count, rows, err, sizeof(err)) != 0)
            fprintf(stderr, "rxd migrate: %s\n", err);
        goto out;
    }
    rc = 0;
out:
    free(lines);
    if (rows)
        PQclear(rows);
    if (c)
        PQfinish(c);
    free(v);
    return rc;
}

int kn_migrate_command(int argc, char **argv)
{
    /* argv[0] is "migrate". */
    bool want_status = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--status") == 0) {
            want_status = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: rxd migrate [--status]\n"
                   "  apply every pending migration of the loaded modules (kernel first, then\n"
                   "  in dependency order), each in its own transaction; --status lists them\n");
            return 0;
        } else {
            fprintf(stderr, "rxd migrate: unknown option '%s' (usage: rxd migrate [--status])\n",
                    argv[i]);
            return 2;
        }
    }
    if (want_status)
        return status();
    char err[1024];
    if (apply_all(true, err, sizeof(err)) != 0) {
        fprintf(stderr, "rxd migrate: %s\n", err);
        return 1;
    }
    return 0;
}

int kn_migrate_ready(char *why, size_t len, void *data)
{
    (void)data;
    if (atomic_load(&checked_ok))
        return 0;
    /* The registrations are read-only once serving: safe to scan unlocked. */
    if (sets.n == 0 && kernel_count() == 0)
        return 0;
    seterr(why, len, "migrations were not checked at start-up");
    return 1;
}
