/*
 * eventspy.c — a test-only module (built next to the real modules so a test
 * can load it with them; never installed) that records named events, so the
 * end-to-end tests can check what a module emitted. Config:
 *   eventspy.events  the event names to subscribe to, space separated
 *   eventspy.file    the file each event is appended to, one JSON line
 *                    {"event": ..., "data": ...}
 */
#include <rx.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *spy_path;
/* Subscribers run on every worker thread: one writer at a time keeps lines whole. */
static pthread_mutex_t spy_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_event(rx_req *req, const char *event, json_t *data, void *ud)
{
    (void)req;
    (void)ud;
    json_t *line = json_pack("{s:s,s:O?}", "event", event, "data", data);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (text == NULL)
        return;
    pthread_mutex_lock(&spy_lock);
    FILE *f = fopen(spy_path, "a");
    if (f != NULL) {
        fprintf(f, "%s\n", text);
        fclose(f);
    }
    pthread_mutex_unlock(&spy_lock);
    free(text);
}

static int init(rx_module *m)
{
    spy_path = rx_config_str(m, "file", NULL);
    const char *events = rx_config_str(m, "events", NULL);
    if (spy_path == NULL || *spy_path == '\0' || events == NULL || *events == '\0') {
        rx_module_fail(m, "eventspy.file and eventspy.events must be set");
        return -1;
    }
    /* rx_on copies the name: a scratch copy of the list is enough. */
    char *list = strdup(events), *save = NULL;
    int rc = list ? 0 : -1;
    for (char *e = list ? strtok_r(list, " \t", &save) : NULL; e; e = strtok_r(NULL, " \t", &save))
        rc |= rx_on(m, e, on_event, NULL);
    free(list);
    return rc == 0 ? 0 : -1;
}

RX_MODULE("eventspy", "1.0.0", .init = init,
          .summary = "test only: records the configured events to a file");
