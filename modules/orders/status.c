/*
 * status.c — the order status machine:
 *   pending -> confirmed -> processing -> ready -> completed,
 *   and cancelled / rejected from any open state (pending .. ready).
 * The handlers do not decide a transition here: they pass ord_allowed_from()
 * to an UPDATE ... WHERE status = ANY(...), so two parallel requests can never
 * both move the same order (the row lock serialises them and the loser's
 * WHERE no longer matches). This file only knows the table and the texts.
 */
#include "orders.h"

#include <stdio.h>
#include <string.h>

typedef struct ord_status {
    const char *name;
    const char *from; /* text[] literal of the statuses it may be reached from */
    const char *to;   /* human list of where it may go, for error messages */
} ord_status;

static const ord_status statuses[] = {
    {"pending", "{}", "confirmed, cancelled, rejected"},
    {"confirmed", "{pending}", "processing, cancelled, rejected"},
    {"processing", "{confirmed}", "ready, cancelled, rejected"},
    {"ready", "{processing}", "completed, cancelled, rejected"},
    {"completed", "{ready}", "none"},
    {"cancelled", "{pending,confirmed,processing,ready}", "none"},
    {"rejected", "{pending,confirmed,processing,ready}", "none"},
};

static const ord_status *find(const char *s)
{
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        if (strcmp(statuses[i].name, s) == 0)
            return &statuses[i];
    return NULL;
}

const char *ord_status_lookup(const char *s)
{
    const ord_status *st = find(s);
    return st ? st->name : NULL;
}

const char *ord_allowed_from(const char *to)
{
    const ord_status *st = find(to);
    return st ? st->from : "{}";
}

void ord_transition_msg(char *buf, size_t n, const char *from, const char *to)
{
    const ord_status *st = find(from);
    snprintf(buf, n, "Cannot change status from \"%s\" to \"%s\". Allowed: %s.", from ? from : "",
             to ? to : "", st ? st->to : "none");
}
