/*
 * log.c — JSON-lines logging. One line per event, written with a single
 * write(2) so lines from different worker threads never interleave.
 * Secrets never reach here: callers log ids and masked values only.
 */
#include "kn_http.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <stdlib.h>
#include <unistd.h>

rx_log_level kn_log_min = RX_LOG_INFO;
/* stderr until `serve`/`worker` switch logs to stdout: a CLI command's own
 * output (routes, openapi, jobs) stays clean on stdout. */
int kn_log_fd = STDERR_FILENO;

static const char *level_name[] = {"debug", "info", "warn", "error"};

void kn_log_line(const char *json, size_t len)
{
    char stackbuf[2048];
    char *buf = len + 1 <= sizeof(stackbuf) ? stackbuf : malloc(len + 1);
    if (buf == NULL)
        return;
    memcpy(buf, json, len);
    buf[len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t n = write(kn_log_fd, buf + off, len + 1 - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (buf != stackbuf)
        free(buf);
}

static void vlog(rx_log_level level, const char *module, const char *fmt, va_list ap)
{
    if (level < kn_log_min)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_name[level], "module",
                          module ? module : "kernel", "msg", msg);
    if (o == NULL)
        return;
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line != NULL) {
        kn_log_line(line, strlen(line));
        free(line);
    }
}

void kn_log(rx_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, fmt, ap);
    va_end(ap);
}

void rx_log(const rx_module *m, rx_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, m ? rx_module_name(m) : NULL, fmt, ap);
    va_end(ap);
}
