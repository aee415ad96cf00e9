/*
 * provider_log.c — the development provider: messages are not sent, they are
 * appended to a JSON-lines outbox (notify.log.outbox, default
 * var/notify/outbox.jsonl), one line per message:
 *   {"channel","to","subject","body","created_at","job_id"}
 * so a developer reads the OTP from the file. It writes the body (that is its
 * purpose) and logs nothing of it.
 *
 * Idempotency: a line whose job_id equals this job's means an earlier attempt
 * already delivered, so a retry appends nothing. The check and the append
 * happen under a process mutex (jobs run concurrently on pool threads) and an
 * flock (several rxd instances may share the file), so two attempts of one
 * job never both append.
 */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t notify_outbox_lock = PTHREAD_MUTEX_INITIALIZER;

/* mkdir -p of the file's directory: `make run` starts from a fresh checkout
 * where var/notify does not exist yet. */
static int notify_mkdirs(const char *path)
{
    char dir[4096];
    if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
        return -1;
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* True when the file already holds this job's message. The lines are compact
 * JSON written by us, fields in a fixed order: a retry writes the same bytes
 * up to "created_at" and the same job_id. Job ids alone are not enough: they
 * restart with every database (tests, a reset dev database) while the outbox
 * file lives on. Inside a string every '"' is escaped, so the markers below
 * can only be the members themselves. */
static bool notify_outbox_has(FILE *f, const char *ours, int64_t job_id)
{
    const char *cut = strstr(ours, ",\"created_at\":");
    if (cut == NULL)
        return false;
    size_t plen = (size_t)(cut - ours);
    char tail[64];
    int tl = snprintf(tail, sizeof(tail), "\"job_id\":%" PRId64 "}", job_id);
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    ssize_t n;
    while (!found && (n = getline(&line, &cap, f)) != -1) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        found = (size_t)n > plen + (size_t)tl && strncmp(line, ours, plen) == 0 &&
                line[plen] == ',' && strcmp(line + n - tl, tail) == 0;
    }
    free(line);
    return found;
}

int notify_log_send(const notify_log_conf *c, const notify_msg *m, bool *skipped, char *err,
                    size_t errlen)
{
    *skipped = false;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[96];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));

    json_t *o = json_object();
    json_object_set_new(o, "channel", json_string(m->channel));
    json_object_set_new(o, "to", json_string(m->to));
    json_object_set_new(o, "subject", m->subject ? json_string(m->subject) : json_null());
    json_object_set_new(o, "body", json_string(m->body));
    json_object_set_new(o, "created_at", json_string(ts));
    json_object_set_new(o, "job_id", m->job_id ? json_integer(m->job_id) : json_null());
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line == NULL) {
        snprintf(err, errlen, "log provider: cannot encode the message");
        return -1;
    }

    int rc = -1;
    pthread_mutex_lock(&notify_outbox_lock);
    int fd = -1;
    FILE *f = NULL;
    if (notify_mkdirs(c->outbox) != 0 ||
        (fd = open(c->outbox, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0) {
        snprintf(err, errlen, "log provider: cannot open %s: %s", c->outbox, strerror(errno));
        goto out;
    }
    if (flock(fd, LOCK_EX) != 0) {
        snprintf(err, errlen, "log provider: cannot lock %s: %s", c->outbox, strerror(errno));
        goto out;
    }
    f = fdopen(fd, "a+");
    if (f == NULL) {
        snprintf(err, errlen, "log provider: %s: %s", c->outbox, strerror(errno));
        goto out;
    }
    fd = -1; /* owned by f now */
    rewind(f);
    if (m->job_id != 0 && notify_outbox_has(f, line, m->job_id)) {
        *skipped = true;
        rc = 0;
        goto out;
    }
    if (fprintf(f, "%s\n", line) < 0 || fflush(f) != 0) {
        snprintf(err, errlen, "log provider: cannot write %s: %s", c->outbox, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f != NULL)
        fclose(f); /* also releases the flock */
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&notify_outbox_lock);
    free(line);
    return rc;
}
