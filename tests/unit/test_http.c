/*
 * test_http.c — HTTP/1.1 edge cases driven through the real connection code
 * (kernel/http.c + llhttp + dispatch + replies) without a network.
 *
 * The kernel is set up as main.c does (a small config with tiny limits, a
 * router, a few test routes, the registry sealed) and one worker is made by
 * hand. Each test connects a socketpair(): the server end is handed to
 * kn_http_adopt(), the test writes request bytes into the other end and runs
 * the worker's loop with UV_RUN_NOWAIT while reading what comes back, with a
 * deadline. Responses are split by a small parser that knows the kernel
 * always sends Content-Length (never chunked).
 *
 * Every test's teardown closes its client sockets and runs the loop until the
 * server has closed every connection and no handle is left (the worker has no
 * handle of its own here), so a connection that never closes fails the test;
 * the group teardown checks uv_loop_close() == 0 and frees everything, so
 * LSan sees any request or connection that leaked.
 */
#define _GNU_SOURCE

#include "kn_http.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define GLOBAL_BODY_LIMIT 64
#define HEADER_BYTES 1024
#define BIG_BODY_LIMIT 256
#define WAIT_NS (3ull * 1000 * 1000 * 1000)

static const char config_text[] = "workers = 1\n"
                                   "max_connections = 64\n"
                                   "[limits]\n"
                                   "header_bytes = 1k\n"
                                   "body = 64\n"
                                   "json_depth = 8\n"
                                   "[log]\n"
                                   "access = false\n"
                                   "level = error\n";

static kn_worker *W;
static kn_worker *workers_arr[1];

/* ------------------------------------------------------------------ */
/* routes                                                              */
/* ------------------------------------------------------------------ */

static void h_hello(rx_req *req)
{
    rx_reply(req, 200, "text/plain", "hello", 5);
}

/* The body back, with its length in a header. */
static void h_echo(rx_req *req)
{
    size_t n;
    const char *b = rx_req_body(req, &n);
    char len[24];
    snprintf(len, sizeof(len), "%zu", n);
    rx_reply_header(req, "X-Body-Len", len);
    rx_reply(req, 200, "application/octet-stream", b, n);
}

static void h_json(rx_req *req)
{
    json_t *j = rx_req_json(req);
    if (j == NULL)
        return; /* already answered */
    rx_reply_json(req, 200, json_incref(j));
}

static void h_params(rx_req *req)
{
    const char *id = rx_req_param(req, "id");
    const char *name = rx_req_param(req, "name");
    const char *q = rx_req_query(req, "q");
    char *s = rx_req_sprintf(req, "id=%s|name=%s|q=%s|route=%s", id ? id : "(null)",
                             name ? name : "(null)", q ? q : "(null)", rx_req_route(req));
    rx_reply(req, 200, "text/plain", s, strlen(s));
}

static void h_path(rx_req *req)
{
    const char *p = rx_req_path(req);
    rx_reply(req, 200, "text/plain", p, strlen(p));
}

/* Every request header as the kernel stored it: "name=value\n" in order. */
static void h_headers(rx_req *req)
{
    char *s = rx_req_strdup(req, "");
    for (size_t i = 0; i < req->nhdrs; i++)
        s = rx_req_sprintf(req, "%s%s=%s\n", s, req->hdrs[i].name,
                           req->hdrs[i].value ? req->hdrs[i].value : "(null)");
    rx_reply(req, 200, "text/plain", s, strlen(s));
}

/* Async: the reply comes from rx_offload()'s done callback. */
static void slow_work(void *arg)
{
    (void)arg;
    usleep(2000);
}

static void slow_done(rx_req *req, void *arg)
{
    (void)arg;
    const char *n = rx_req_query(req, "n");
    char *s = rx_req_sprintf(req, "slow%s", n ? n : "");
    rx_reply(req, 200, "text/plain", s, strlen(s));
}

static void h_slow(rx_req *req)
{
    if (rx_offload(req, slow_work, slow_done, NULL) != 0)
        rx_reply_error(req, 500, "error", "offload failed");
}

/* A body larger than any socket buffer: written with uv_write in pieces. */
#define LARGE_LEN (1u << 20)
static char *large_body;

static void h_large(rx_req *req)
{
    rx_reply(req, 200, "application/octet-stream", large_body, LARGE_LEN);
}

static size_t route_index(const char *path)
{
    for (size_t i = 0; i < kn_reg.routes.n; i++)
        if (strcmp(kn_reg.routes.v[i]->path, path) == 0)
            return (size_t)kn_reg.routes.v[i]->index;
    fail_msg("no route %s", path);
    return 0;
}

/* ------------------------------------------------------------------ */
/* kernel set-up, as main.c does it                                    */
/* ------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &sa, NULL); /* as kn_serve() does */

    char err[512];
    if (kn_config_parse(&kn_conf, config_text, strlen(config_text), "test.conf", err,
                        sizeof(err)) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    if (kn_settings_load(err, sizeof(err)) != 0) {
        fprintf(stderr, "settings: %s\n", err);
        return -1;
    }
    if (kn_set.header_bytes != HEADER_BYTES || kn_set.body_limit != GLOBAL_BODY_LIMIT) {
        fprintf(stderr, "limits not applied (RXD_LIMITS_* set in the environment?)\n");
        return -1;
    }
    kn_reg.router = kn_router_new();
    kn_reg.open = true;
    const rx_route_opts pub = {.public_route = true};
    const rx_route_opts big = {.public_route = true, .body_limit = BIG_BODY_LIMIT};
    int rc = 0;
    rc |= kn_route_add(NULL, RX_GET, "/hello", h_hello, &pub);
    rc |= kn_route_add(NULL, RX_POST | RX_PUT, "/echo", h_echo, &pub);
    rc |= kn_route_add(NULL, RX_POST, "/big", h_echo, &big);
    rc |= kn_route_add(NULL, RX_POST, "/json", h_json, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/items/{id}/{name}", h_params, &pub);
    rc |= kn_route_add(NULL, RX_GET | RX_POST, "/headers", h_headers, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/slow", h_slow, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/large", h_large, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/dir/", h_hello, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/path/{x}", h_path, &pub);
    if (rc != 0) {
        fprintf(stderr, "routes: %s\n", kn_reg.error);
        return -1;
    }
    kn_registry_seal();

    large_body = malloc(LARGE_LEN);
    if (large_body == NULL)
        return -1;
    for (size_t i = 0; i < LARGE_LEN; i++)
        large_body[i] = (char)('a' + i % 26);

    W = calloc(1, sizeof(*W));
    if (W == NULL || uv_loop_init(&W->loop) != 0)
        return -1;
    W->loop.data = W;
    W->rid_base = 0x0123456789abcdefull;
    W->listen_fd = -1;
    workers_arr[0] = W;
    kn_workers = workers_arr;
    kn_nworkers = 1;
    if (kn_metrics_init(W) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (W != NULL) {
        /* Every connection was closed by the tests' teardowns. */
        uv_run(&W->loop, UV_RUN_NOWAIT);
        if (W->conns != NULL || W->nconns != 0) {
            fprintf(stderr, "connections left open: %lld\n", W->nconns);
            rc = -1;
        }
        kn_metrics_free(W);
        int lc = uv_loop_close(&W->loop);
        if (lc != 0) {
            fprintf(stderr, "uv_loop_close: %s (a handle was never closed)\n", uv_strerror(lc));
            rc = -1;
        }
        free(W);
        W = NULL;
    }
    kn_workers = NULL;
    kn_nworkers = 0;
    free(large_body);
    large_body = NULL;
    kn_dispatch_free();
    kn_static_free();
    kn_registry_free();
    kn_settings_free();
    kn_config_free(kn_conf);
    kn_conf = NULL;
    return rc;
}

/* ------------------------------------------------------------------ */
/* a client end of a socketpair                                        */
/* ------------------------------------------------------------------ */

typedef struct client {
    int fd;  /* ours */
    int sfd; /* the server's (libuv owns and closes it) */
    bool eof, reset;
    bool peer_gone;  /* a write failed: the server closed its end */
    size_t len, off; /* bytes received; bytes consumed by the response parser */
    char buf[4 << 20];
} client;

#define MAX_CLIENTS 4
static client *clients[MAX_CLIENTS];

static client *connect_client(void)
{
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = fds[1];
    c->sfd = fds[0];
    assert_int_equal(fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK), 0);
    int slot = -1;
    for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
        if (clients[i] == NULL)
            slot = i;
    assert_true(slot >= 0);
    clients[slot] = c;
    long long before = W->nconns;
    assert_int_equal(kn_http_adopt(W, c->sfd), 0);
    assert_int_equal(W->nconns, before + 1);
    return c;
}

/* Run the loop once without blocking and take whatever the server wrote. */
static void pump(client *c)
{
    uv_run(&W->loop, UV_RUN_NOWAIT);
    while (!c->eof && c->len < sizeof(c->buf)) {
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            c->eof = true;
        } else if (errno == ECONNRESET) {
            /* AF_UNIX: the server closed with our bytes unread. */
            c->eof = c->reset = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            fail_msg("read: %s", strerror(errno));
        }
        break;
    }
}

static void nap(client *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    poll(&p, 1, 1);
}

/* Bytes written to the server's socket that it has not read yet, or 0. */
static int unread_by_server(client *c)
{
    int n = 0;
    if (ioctl(c->sfd, FIONREAD, &n) != 0)
        return 0; /* closed */
    return n;
}

/* Let the server read everything sent so far (or stop reading). */
static void settle(client *c)
{
    uint64_t end = uv_hrtime() + WAIT_NS / 3;
    do {
        pump(c);
        if (unread_by_server(c) == 0 || c->eof)
            break;
        nap(c);
    } while (uv_hrtime() < end);
    pump(c);
}

static void send_bytes(client *c, const void *data, size_t n)
{
    const char *p = data;
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            pump(c);
            assert_true(uv_hrtime() < end);
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            c->peer_gone = true; /* it answered and closed: the rest is moot */
            return;
        }
        fail_msg("write: %s", w < 0 ? strerror(errno) : "0 bytes");
    }
}

static void send_str(client *c, const char *s)
{
    send_bytes(c, s, strlen(s));
}

/* Send in pieces of `step` bytes, letting the server read each one alone. */
static void send_split(client *c, const char *s, size_t n, size_t step)
{
    for (size_t i = 0; i < n && !c->peer_gone && !c->eof; i += step) {
        send_bytes(c, s + i, n - i < step ? n - i : step);
        settle(c);
    }
}

/* ---- responses ---- */

typedef struct resp {
    int status;
    char head[8192];  /* status line + headers, NUL-terminated */
    const char *body; /* into the client's buffer (never moved) */
    size_t body_len;
} resp;

/* A header's value (first occurrence) into a static buffer, or NULL. */
static const char *rh(const resp *r, const char *name)
{
    static char val[2048];
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line != NULL && line[2] != '\0') {
        line += 2;
        const char *eol = strstr(line, "\r\n");
        if (eol == NULL)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            assert_true(vl < sizeof(val));
            memcpy(val, v, vl);
            val[vl] = '\0';
            return val;
        }
        line = eol;
    }
    return NULL;
}

/* The header must be present with exactly this value. */
#define assert_header(r, name, want)                                                               \
    do {                                                                                           \
        const char *v_ = rh((r), (name));                                                          \
        if (v_ == NULL)                                                                            \
            fail_msg("no %s header in:\n%s", (name), (r)->head);                                  \
        assert_string_equal(v_, (want));                                                           \
    } while (0)

static int header_count(const resp *r, const char *name)
{
    int n = 0;
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':')
            n++;
    return n;
}

/* Parse one response at c->off; false when it is not all there yet. */
static bool parse_resp(client *c, resp *r, bool head_request)
{
    const char *start = c->buf + c->off;
    size_t avail = c->len - c->off;
    if (avail == 0)
        return false;
    size_t cmp = avail < 9 ? avail : 9;
    if (memcmp(start, "HTTP/1.1 ", cmp) != 0)
        fail_msg("not a response at offset %zu: \"%.*s\"", c->off, (int)(avail > 60 ? 60 : avail),
                 start);
    const char *end = memmem(start, avail, "\r\n\r\n", 4);
    if (end == NULL)
        return false;
    size_t hlen = (size_t)(end - start) + 4;
    assert_true(hlen < sizeof(r->head));
    memset(r, 0, sizeof(*r));
    memcpy(r->head, start, hlen);
    r->body = "";
    r->status = atoi(r->head + 9);
    assert_true(r->status >= 100 && r->status <= 599);
    size_t blen = 0;
    bool no_body = head_request || r->status < 200 || r->status == 204 || r->status == 304;
    if (!no_body) {
        const char *cl = rh(r, "Content-Length");
        if (cl == NULL)
            fail_msg("response without Content-Length: %s", r->head);
        blen = (size_t)strtoul(cl, NULL, 10);
        assert_int_equal(header_count(r, "Content-Length"), 1);
    }
    assert_null(rh(r, "Transfer-Encoding"));
    if (avail - hlen < blen)
        return false;
    r->body = start + hlen;
    r->body_len = blen;
    c->off += hlen + blen;
    return true;
}

static void next_resp_m(client *c, resp *r, bool head_request)
{
    uint64_t end = uv_hrtime() + WAIT_NS;
    for (;;) {
        pump(c);
        if (parse_resp(c, r, head_request))
            return;
        if (c->eof)
            fail_msg("connection closed before a complete response (%zu bytes pending: \"%.*s\")",
                     c->len - c->off, (int)(c->len - c->off > 80 ? 80 : c->len - c->off),
                     c->buf + c->off);
        if (uv_hrtime() > end)
            fail_msg("no complete response within the deadline (%zu bytes received, %zu not "
                     "parsed)",
                     c->len, c->len - c->off);
        nap(c);
    }
}

static void next_resp(client *c, resp *r)
{
    next_resp_m(c, r, false);
}

/* The server must close the connection and send nothing more. */
static void expect_close(client *c)
{
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (!c->eof) {
        pump(c);
        if (uv_hrtime() > end)
            fail_msg("the server did not close the connection");
        nap(c);
    }
    if (c->off != c->len)
        fail_msg("%zu unexpected bytes before EOF: \"%.*s\"", c->len - c->off,
                 (int)(c->len - c->off > 80 ? 80 : c->len - c->off), c->buf + c->off);
}

/* The connection stays open and nothing more arrives for a while. */
static void expect_open(client *c)
{
    uint64_t end = uv_hrtime() + 20ull * 1000 * 1000;
    while (uv_hrtime() < end) {
        pump(c);
        nap(c);
    }
    assert_false(c->eof);
    assert_int_equal(c->len - c->off, 0);
}

static void client_close(client *c)
{
    close(c->fd);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] == c)
            clients[i] = NULL;
    free(c);
}

static int setup(void **state)
{
    (void)state;
    return 0;
}

/* Close the clients, then the server must close its side and every handle. */
static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] != NULL)
            client_close(clients[i]);
    int rc = 0;
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (uv_loop_alive(&W->loop) || W->nconns != 0) {
        uv_run(&W->loop, UV_RUN_NOWAIT);
        if (uv_hrtime() > end && rc == 0) {
            /* Fail this test, but close what is left so the next ones run. */
            fprintf(stderr, "teardown: %lld connection(s) still open after the client left\n",
                    W->nconns);
            kn_http_drain(W, true);
            rc = -1;
            end = uv_hrtime() + WAIT_NS;
        } else if (uv_hrtime() > end) {
            fprintf(stderr, "teardown: cannot close the connections\n");
            return -1;
        }
        usleep(200);
    }
    if (rc != 0)
        return rc;
    if (W->conns != NULL || atomic_load(&W->open_conns) != 0) {
        fprintf(stderr, "teardown: connection list not empty\n");
        return -1;
    }
    return 0;
}

/* One request on a fresh connection; the reply must be followed by a close. */
static void one_shot_close(const char *req, size_t len, resp *r)
{
    client *c = connect_client();
    send_bytes(c, req, len);
    next_resp(c, r);
    assert_header(r, "Connection", "close");
    expect_close(c);
}

static void assert_body(const resp *r, const char *want)
{
    if (r->body_len != strlen(want) || memcmp(r->body, want, r->body_len) != 0)
        fail_msg("body \"%.*s\", want \"%s\"", (int)r->body_len, r->body, want);
}

static void assert_error_body(const resp *r, const char *code, const char *detail)
{
    json_error_t e;
    json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, &e) : NULL;
    if (j == NULL)
        fail_msg("error body is not JSON: %.*s", (int)r->body_len, r->body);
    const char *gc = json_string_value(json_object_get(j, "code"));
    const char *gd = json_string_value(json_object_get(j, "detail"));
    char gcb[128], gdb[256];
    snprintf(gcb, sizeof(gcb), "%s", gc ? gc : "(none)");
    snprintf(gdb, sizeof(gdb), "%s", gd ? gd : "(none)");
    size_t keys = json_object_size(j);
    json_decref(j);
    assert_string_equal(gcb, code);
    if (detail != NULL)
        assert_string_equal(gdb, detail);
    assert_int_equal(keys, 2);
    assert_header(r, "Content-Type", "application/json");
}

static bool is_hex(const char *s, size_t n)
{
    if (s == NULL || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* basics                                                              */
/* ------------------------------------------------------------------ */

static void test_get_simple(void **state)
{
    (void)state;
    size_t ri = route_index("/hello");
    uint64_t count0 = W->stats[ri].count, ok0 = W->stats[ri].status[0];
    client *c = connect_client();
    send_str(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_true(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_header(&r, "Server", "rxd");
    const char *date = rh(&r, "Date");
    assert_non_null(date);
    assert_int_equal(strlen(date), 29); /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    assert_string_equal(date + 25, " GMT");
    assert_int_equal(date[3], ',');
    assert_header(&r, "Content-Length", "5");
    assert_header(&r, "Content-Type", "text/plain");
    assert_true(is_hex(rh(&r, "X-Request-Id"), 24));
    assert_memory_equal(rh(&r, "X-Request-Id"), "0123456789abcdef", 16);
    assert_header(&r, "X-Content-Type-Options", "nosniff");
    assert_null(rh(&r, "Connection")); /* HTTP/1.1: persistent by default */
    assert_body(&r, "hello");
    expect_open(c);
    /* Counted against the route, status 200 in slot 0. */
    assert_int_equal(W->stats[ri].count, count0 + 1);
    assert_int_equal(W->stats[ri].status[0], ok0 + 1);
}

static void test_request_id(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r1, r2, r3;
    send_str(c, "GET /hello HTTP/1.1\r\nX-Request-Id: abc-DEF_1.2\r\n\r\n");
    next_resp(c, &r1);
    assert_header(&r1, "X-Request-Id", "abc-DEF_1.2");
    /* Not sane: replaced by a generated one; generated ones differ. */
    send_str(c, "GET /hello HTTP/1.1\r\nX-Request-Id: a\"b\r\n\r\n");
    next_resp(c, &r2);
    send_str(c, "GET /hello HTTP/1.1\r\n\r\n");
    next_resp(c, &r3);
    char id2[64];
    assert_true(is_hex(rh(&r2, "X-Request-Id"), 24));
    snprintf(id2, sizeof(id2), "%s", rh(&r2, "X-Request-Id"));
    assert_true(is_hex(rh(&r3, "X-Request-Id"), 24));
    assert_string_not_equal(id2, rh(&r3, "X-Request-Id"));
}

static void test_split_byte_by_byte(void **state)
{
    (void)state;
    client *c = connect_client();
    static const char req[] = "POST /echo HTTP/1.1\r\nHost: example\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 11\r\n\r\nhello world";
    send_split(c, req, sizeof(req) - 1, 1);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "X-Body-Len", "11");
    assert_body(&r, "hello world");

    /* And a GET, byte by byte, on the same connection. */
    static const char get[] = "GET /items/7/seven?q=x HTTP/1.1\r\nHost: example\r\n\r\n";
    send_split(c, get, sizeof(get) - 1, 1);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "id=7|name=seven|q=x|route=/items/{id}/{name}");
    expect_open(c);
}

static void test_split_header_name_value(void **state)
{
    (void)state;
    client *c = connect_client();
    const char *pieces[] = {"GET /head", "ers HTTP/1.1\r\nX-Lo", "ng-Na", "me", ": val",
                            "ue-", "split", "\r", "\nX-Other:", " 1\r\nX-Th", "ird: 3\r\n", "\r\n"};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        send_str(c, pieces[i]);
        settle(c);
    }
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "X-Long-Name=value-split\nX-Other=1\nX-Third=3\n");
}

/* An empty header value must not glue the next header's name to it. */
static void test_empty_header_value(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /headers HTTP/1.1\r\nX-Empty:\r\nX-After: 2\r\nX-Blank: \r\nX-Last: z\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "X-Empty=\nX-After=2\nX-Blank=\nX-Last=z\n");
    /* The same, split right after the empty value. */
    send_str(c, "GET /headers HTTP/1.1\r\nX-Empty:");
    settle(c);
    send_str(c, "\r\n");
    settle(c);
    send_str(c, "X-After: 2\r\n\r\n");
    next_resp(c, &r);
    assert_body(&r, "X-Empty=\nX-After=2\n");
}

static void test_pipelined(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /items/1/a HTTP/1.1\r\n\r\n"
                "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                "GET /items/2/b HTTP/1.1\r\n\r\n"
                "GET /nope HTTP/1.1\r\n\r\n"
                "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
                "GET /items/3/c HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_body(&r, "id=1|name=a|q=(null)|route=/items/{id}/{name}");
    next_resp(c, &r);
    assert_body(&r, "abc");
    next_resp(c, &r);
    assert_body(&r, "id=2|name=b|q=(null)|route=/items/{id}/{name}");
    next_resp(c, &r);
    assert_int_equal(r.status, 404);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "xy");
    next_resp(c, &r);
    assert_body(&r, "id=3|name=c|q=(null)|route=/items/{id}/{name}");
    expect_open(c);
}

/* Many pipelined requests in one write: more than fit in one read would be
 * nice, but the point is order and count. */
static void test_pipelined_many(void **state)
{
    (void)state;
    client *c = connect_client();
    char buf[8192];
    size_t off = 0;
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "GET /items/%d/n HTTP/1.1\r\n\r\n", i);
    send_bytes(c, buf, off);
    for (int i = 0; i < 100; i++) {
        resp r;
        next_resp(c, &r);
        char want[96];
        snprintf(want, sizeof(want), "id=%d|name=n|q=(null)|route=/items/{id}/{name}", i);
        assert_body(&r, want);
    }
    expect_open(c);
}

/* ------------------------------------------------------------------ */
/* persistence                                                         */
/* ------------------------------------------------------------------ */

static void test_keepalive(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    for (int i = 0; i < 3; i++) {
        send_str(c, "GET /hello HTTP/1.1\r\nConnection: keep-alive\r\n\r\n");
        next_resp(c, &r);
        assert_int_equal(r.status, 200);
        assert_null(rh(&r, "Connection"));
        expect_open(c);
    }
}

static void test_connection_close(void **state)
{
    (void)state;
    client *c = connect_client();
    /* The request after the one asking to close is never answered. */
    send_str(c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "close");
    assert_body(&r, "hello");
    expect_close(c);
}

static void test_http10(void **state)
{
    (void)state;
    resp r;
    static const char req[] = "GET /hello HTTP/1.0\r\n\r\n";
    one_shot_close(req, sizeof(req) - 1, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello");
    assert_true(strncmp(r.head, "HTTP/1.1 200", 12) == 0);
}

static void test_http10_keepalive(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    for (int i = 0; i < 2; i++) {
        send_str(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        next_resp(c, &r);
        assert_int_equal(r.status, 200);
        assert_header(&r, "Connection", "keep-alive");
        assert_body(&r, "hello");
        expect_open(c);
    }
    /* Then without keep-alive: closed. */
    send_str(c, "GET /hello HTTP/1.0\r\n\r\n");
    next_resp(c, &r);
    assert_header(&r, "Connection", "close");
    expect_close(c);
}

/* ------------------------------------------------------------------ */
/* bodies                                                              */
/* ------------------------------------------------------------------ */

static void test_chunked_extensions(void **state)
{
    (void)state;
    client *c = connect_client();
    static const char req[] = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5;ext=1\r\nhello\r\n"
                              "6;a=b\r\n world\r\n"
                              "A;flag\r\n0123456789\r\n"
                              "0;last\r\nX-Trailer: t\r\n\r\n";
    send_str(c, req);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "X-Body-Len", "21");
    assert_body(&r, "hello world0123456789");
    /* The same body split at awkward places. */
    send_split(c, req, sizeof(req) - 1, 7);
    next_resp(c, &r);
    assert_body(&r, "hello world0123456789");
    expect_open(c);
}

static void test_body_at_limit(void **state)
{
    (void)state;
    client *c = connect_client();
    char body[GLOBAL_BODY_LIMIT + 1];
    memset(body, 'b', GLOBAL_BODY_LIMIT);
    body[GLOBAL_BODY_LIMIT] = '\0';
    char req[512];
    snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s",
             GLOBAL_BODY_LIMIT, body);
    send_str(c, req);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, body);
    /* Chunked, exactly at the limit. */
    snprintf(req, sizeof(req),
             "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n%.32s\r\n20\r\n%.32s\r\n0\r\n\r\n",
             body, body);
    send_str(c, req);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, body);
    expect_open(c);
}

static void test_413_content_length(void **state)
{
    (void)state;
    client *c = connect_client();
    char req[256];
    snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
             GLOBAL_BODY_LIMIT + 1);
    /* Headers only: the answer must not wait for the body. */
    send_str(c, req);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 413);
    assert_header(&r, "Connection", "close");
    assert_error_body(&r, "request_too_large", "Request body is too large.");
    expect_close(c);

    /* A huge declared length, same answer. */
    static const char huge[] = "POST /echo HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
    one_shot_close(huge, sizeof(huge) - 1, &r);
    assert_int_equal(r.status, 413);
}

static void test_413_chunked(void **state)
{
    (void)state;
    client *c = connect_client();
    char req[512];
    char body[41];
    memset(body, 'c', 40);
    body[40] = '\0';
    /* 40 + 25 = 65 > 64 */
    snprintf(req, sizeof(req),
             "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n%s\r\n19\r\n%.25s\r\n0\r\n\r\n",
             body, body);
    send_str(c, req);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 413);
    assert_header(&r, "Connection", "close");
    assert_error_body(&r, "request_too_large", "Request body is too large.");
    expect_close(c);

    /* One chunk declared larger than the limit, its data arriving: 413 once
     * the limit is crossed, without waiting for the rest of the chunk. */
    client *c2 = connect_client();
    send_str(c2, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n");
    settle(c2);
    send_bytes(c2, body, 40);
    settle(c2);
    send_bytes(c2, body, 25);
    next_resp(c2, &r);
    assert_int_equal(r.status, 413);
    expect_close(c2);
}

static void test_route_body_limit(void **state)
{
    (void)state;
    client *c = connect_client();
    char body[BIG_BODY_LIMIT + 2];
    memset(body, 'B', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    char req[1024];
    /* Over the global 64 but within the route's 256. */
    snprintf(req, sizeof(req), "POST /big HTTP/1.1\r\nContent-Length: 200\r\n\r\n%.200s", body);
    send_str(c, req);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "X-Body-Len", "200");
    snprintf(req, sizeof(req), "POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n%.*s",
             BIG_BODY_LIMIT, BIG_BODY_LIMIT, body);
    send_str(c, req);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG_BODY_LIMIT);
    /* One more byte: 413. */
    snprintf(req, sizeof(req), "POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
             BIG_BODY_LIMIT + 1);
    send_str(c, req);
    next_resp(c, &r);
    assert_int_equal(r.status, 413);
    expect_close(c);
    /* Chunked over the route's limit. */
    client *c2 = connect_client();
    snprintf(req, sizeof(req),
             "POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nC8\r\n%.200s\r\n40\r\n%.64s\r\n0\r\n\r\n",
             body, body);
    send_str(c2, req);
    next_resp(c2, &r);
    assert_int_equal(r.status, 413);
    expect_close(c2);
}

static void test_expect_continue(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 100);
    assert_string_equal(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
    expect_open(c); /* no final answer before the body */
    send_str(c, "12345");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "12345");
    /* Case-insensitive, chunked body. */
    send_str(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 100);
    send_str(c, "3\r\nabc\r\n0\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "abc");
    expect_open(c);
}

/* Too large: the final status instead of 100, and no body is waited for. */
static void test_expect_continue_too_large(void **state)
{
    (void)state;
    static const char req[] =
        "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n";
    resp r;
    one_shot_close(req, sizeof(req) - 1, &r);
    assert_int_equal(r.status, 413);
}

static void test_expect_other(void **state)
{
    (void)state;
    static const char req[] = "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\n";
    resp r;
    one_shot_close(req, sizeof(req) - 1, &r);
    assert_int_equal(r.status, 417);
    assert_error_body(&r, "expectation_failed", "Expectation failed.");
}

/* HTTP/1.0 clients do not understand 100: the body is just read. */
static void test_expect_http10(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "POST /echo HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    settle(c);
    assert_int_equal(c->len, 0);
    send_str(c, "ok");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "ok");
    expect_close(c);
}

/* ------------------------------------------------------------------ */
/* limits and malformed input                                          */
/* ------------------------------------------------------------------ */

static void test_431_header_too_large(void **state)
{
    (void)state;
    char req[4096];
    char pad[1101];
    memset(pad, 'v', 1100);
    pad[1100] = '\0';
    int n = snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nX-Big: %s\r\n\r\n", pad);
    resp r;
    one_shot_close(req, (size_t)n, &r);
    assert_int_equal(r.status, 431);
    assert_error_body(&r, "headers_too_large", "Request header fields are too large.");

    /* Many small headers add up too. */
    size_t off = (size_t)snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(req + off, sizeof(req) - off, "X-H%02d: abcdefgh\r\n", i);
    off += (size_t)snprintf(req + off, sizeof(req) - off, "\r\n");
    one_shot_close(req, off, &r);
    assert_int_equal(r.status, 431);
}

/* url + names + values count; exactly header_bytes is allowed. */
static void test_header_budget_boundary(void **state)
{
    (void)state;
    /* "/hello" (6) + "X-Pad" (5) + value */
    char pad[HEADER_BYTES];
    size_t vlen = HEADER_BYTES - 6 - 5;
    memset(pad, 'p', vlen);
    pad[vlen] = '\0';
    char req[4096];
    client *c = connect_client();
    int n = snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nX-Pad: %s\r\n\r\n", pad);
    send_bytes(c, req, (size_t)n);
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    expect_open(c);
    /* The budget is per request: the same again is fine. */
    send_bytes(c, req, (size_t)n);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    /* One byte more: 431. */
    n = snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nX-Pad: %sp\r\n\r\n", pad);
    send_bytes(c, req, (size_t)n);
    next_resp(c, &r);
    assert_int_equal(r.status, 431);
    expect_close(c);
}

static void test_431_long_url(void **state)
{
    (void)state;
    char req[4096];
    char path[2001];
    memset(path, 'u', 2000);
    path[2000] = '\0';
    int n = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\n\r\n", path);
    resp r;
    one_shot_close(req, (size_t)n, &r);
    assert_int_equal(r.status, 431);
    assert_error_body(&r, "headers_too_large", NULL);
    /* Split over several writes, same answer. */
    client *c = connect_client();
    send_split(c, req, (size_t)n, 300);
    next_resp(c, &r);
    assert_int_equal(r.status, 431);
    expect_close(c);
}

/* llhttp cannot tell an unknown method from a garbled request line: both
 * are a 400 that closes. */
static void test_unknown_method_400(void **state)
{
    (void)state;
    static const char *const reqs[] = {"FOO /hello HTTP/1.1\r\n\r\n",
                                       "get /hello HTTP/1.1\r\n\r\n",
                                       "GETT /hello HTTP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        resp r;
        one_shot_close(reqs[i], strlen(reqs[i]), &r);
        assert_int_equal(r.status, 400);
        assert_error_body(&r, "bad_request", "Malformed HTTP request.");
        assert_true(is_hex(rh(&r, "X-Request-Id"), 24));
    }
}

/* Bytes that are not HTTP at all (a TLS ClientHello, binary noise): an
 * invalid request line is a 400 (RFC 9112 3), not "method not implemented". */
static void test_garbage_400(void **state)
{
    (void)state;
    static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    resp r;
    one_shot_close(tls, sizeof(tls) - 1, &r);
    assert_int_equal(r.status, 400);
    assert_error_body(&r, "bad_request", "Malformed HTTP request.");
}

/* Malformed requests, each on its own connection: 400 and close. */
static void test_malformed_400(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET /hello XTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1 extra\r\n\r\n",
        "GET /hello HTTP/1.1\r\nContent-Length : 0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
        "GET /hello HTTP/1.2\r\n\r\n",
        "GET /he llo HTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nX-A: a\x7f\r\n\r\n",
        "GET /hello HTTP/1.1\r\nX-A\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        /* request smuggling shapes */
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        "GET /hello HTTP/1.1\r\n X-Folded: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        client *c = connect_client();
        send_str(c, bad[i]);
        resp r;
        next_resp(c, &r);
        if (r.status != 400)
            fail_msg("request %zu (%s): status %d, want 400", i, bad[i], r.status);
        assert_header(&r, "Connection", "close");
        assert_error_body(&r, "bad_request", "Malformed HTTP request.");
        assert_true(is_hex(rh(&r, "X-Request-Id"), 24)); /* generated */
        expect_close(c);
        client_close(c);
    }
}

/* An early error carries the client's request id when its header arrived. */
static void test_early_error_request_id(void **state)
{
    (void)state;
    static const char bad_cl[] =
        "POST /echo HTTP/1.1\r\nX-Request-Id: mine-1\r\nContent-Length: abc\r\n\r\n";
    resp r;
    one_shot_close(bad_cl, sizeof(bad_cl) - 1, &r);
    assert_int_equal(r.status, 400);
    assert_header(&r, "X-Request-Id", "mine-1");
    static const char too_big[] =
        "POST /echo HTTP/1.1\r\nX-Request-Id: mine-2\r\nContent-Length: 65\r\n\r\n";
    one_shot_close(too_big, sizeof(too_big) - 1, &r);
    assert_int_equal(r.status, 413);
    assert_header(&r, "X-Request-Id", "mine-2");
}

/* A malformed request after a good one: the good one is answered first. */
static void test_malformed_after_good(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nX\x01: y\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    next_resp(c, &r);
    assert_int_equal(r.status, 400);
    expect_close(c);
}

/* Bare LF line endings: whatever llhttp accepts, the answer is a valid 200
 * or a 400 that closes, never a hang or a crash. */
static void test_bare_lf(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /hello HTTP/1.1\nHost: x\n\n",
        "GET /hello HTTP/1.1\r\nHost: x\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\n\n",
        "GET /hello HTTP/1.1\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        client *c = connect_client();
        send_str(c, reqs[i]);
        resp r;
        next_resp(c, &r);
        if (r.status == 200) {
            assert_body(&r, "hello");
        } else {
            assert_int_equal(r.status, 400);
            expect_close(c);
        }
        client_close(c);
    }
}

static void test_nul_in_header(void **state)
{
    (void)state;
    static const char value_nul[] = "GET /hello HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
    resp r;
    one_shot_close(value_nul, sizeof(value_nul) - 1, &r);
    assert_int_equal(r.status, 400);
    static const char name_nul[] = "GET /hello HTTP/1.1\r\nX-\0A: ab\r\n\r\n";
    one_shot_close(name_nul, sizeof(name_nul) - 1, &r);
    assert_int_equal(r.status, 400);
    static const char url_nul[] = "GET /hel\0lo HTTP/1.1\r\n\r\n";
    one_shot_close(url_nul, sizeof(url_nul) - 1, &r);
    assert_int_equal(r.status, 400);
}

/* A partial request, then nothing: 408 after the header timeout. */
static void test_header_timeout_408(void **state)
{
    (void)state;
    long long saved = kn_set.header_timeout_ms;
    kn_set.header_timeout_ms = 30;
    client *c = connect_client();
    send_str(c, "GET /hello HTTP/1.1\r\nHo");
    resp r;
    next_resp(c, &r);
    kn_set.header_timeout_ms = saved;
    assert_int_equal(r.status, 408);
    assert_error_body(&r, "request_timeout", "Request timeout.");
    expect_close(c);
}

/* A connection that never sends anything is closed without a word. */
static void test_idle_timeout(void **state)
{
    (void)state;
    long long saved = kn_set.header_timeout_ms;
    kn_set.header_timeout_ms = 30;
    client *c = connect_client();
    kn_set.header_timeout_ms = saved;
    expect_close(c);
    assert_int_equal(c->len, 0);
}

/* Body timeout: headers complete, the body stops half way. */
static void test_body_timeout_408(void **state)
{
    (void)state;
    long long saved = kn_set.body_timeout_ms;
    kn_set.body_timeout_ms = 30;
    client *c = connect_client();
    send_str(c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    resp r;
    next_resp(c, &r);
    kn_set.body_timeout_ms = saved;
    assert_int_equal(r.status, 408);
    expect_close(c);
}

/* ------------------------------------------------------------------ */
/* routing answers                                                     */
/* ------------------------------------------------------------------ */

static void test_head_no_body(void **state)
{
    (void)state;
    client *c = connect_client();
    /* Pipelined: a stray body after HEAD's headers would break the next parse. */
    send_str(c, "HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    resp r;
    next_resp_m(c, &r, true);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Length", "5"); /* GET's length */
    assert_int_equal(r.body_len, 0);
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello");
    /* HEAD of a 404: no body either. */
    send_str(c, "HEAD /nope HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    next_resp_m(c, &r, true);
    assert_int_equal(r.status, 404);
    next_resp(c, &r);
    assert_body(&r, "hello");
    expect_open(c);
}

static void test_404_405_allow(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "GET /nope HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 404);
    assert_error_body(&r, "not_found", "Not found.");
    assert_null(rh(&r, "Connection")); /* a 404 does not close */

    send_str(c, "POST /hello HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    next_resp(c, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD, OPTIONS");
    assert_error_body(&r, "method_not_allowed", "Method \"POST\" not allowed.");

    send_str(c, "DELETE /echo HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "POST, PUT, OPTIONS");

    /* A method llhttp knows but rxd does not route. */
    send_str(c, "PROPFIND /hello HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD, OPTIONS");

    send_str(c, "OPTIONS /echo HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 204);
    assert_header(&r, "Allow", "POST, PUT, OPTIONS");
    assert_null(rh(&r, "Content-Length"));
    expect_open(c);
}

/* GET /dir -> 301 /dir/ (the route exists with the slash). The reply
 * finishes and frees the request inside kn_dispatch(), which must not touch
 * it afterwards (was a heap-use-after-free there, seen under ASan). */
static void test_slash_redirect(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "GET /dir?a=1 HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 301);
    assert_header(&r, "Location", "/dir/?a=1");
    send_str(c, "POST /dir HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 404);
    expect_open(c);
}

static void test_params_percent_encoded(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "GET /items/a%20b/c%2Fd?q=x+y%21&z=1 HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "id=a b|name=c/d|q=x y!|route=/items/{id}/{name}");
    /* UTF-8, and a '+' in a path segment is a '+'. */
    send_str(c, "GET /items/%C3%A9t%C3%A9/a+b?q=%2B HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_body(&r, "id=\xc3\xa9t\xc3\xa9|name=a+b|q=+|route=/items/{id}/{name}");
    /* A bad escape: the handler sees no value. */
    send_str(c, "GET /items/%zz/ok HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_body(&r, "id=(null)|name=ok|q=(null)|route=/items/{id}/{name}");
    expect_open(c);
}

/* rx.h: rx_req_path() is "The decoded path, without the query string". */
static void test_req_path_decoded(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "GET /path/a%20b?q=1 HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "/path/a b");
}

/* ------------------------------------------------------------------ */
/* rx_req_json                                                         */
/* ------------------------------------------------------------------ */

static void test_json_415(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    next_resp(c, &r);
    assert_int_equal(r.status, 415);
    assert_error_body(&r, "unsupported_media_type",
                      "Unsupported media type \"text/plain\" in request.");
    /* No Content-Type at all. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    next_resp(c, &r);
    assert_int_equal(r.status, 415);
    assert_error_body(&r, "unsupported_media_type", "Unsupported media type \"\" in request.");
    /* application/jsonx is not JSON. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: application/jsonx\r\nContent-Length: 2\r\n\r\n{}");
    next_resp(c, &r);
    assert_int_equal(r.status, 415);
    expect_open(c); /* handler errors keep the connection */
}

static void test_json_400(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{bad");
    next_resp(c, &r);
    assert_int_equal(r.status, 400);
    assert_error_body(&r, "parse_error", NULL);
    assert_true(r.body_len > 40);
    assert_non_null(memmem(r.body, r.body_len, "\"JSON parse error - ", 20));
    /* Deeper than limits.json_depth (8). */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n"
                "[[[[[[[[[]]]]]]]]]");
    next_resp(c, &r);
    assert_int_equal(r.status, 400);
    assert_error_body(&r, "parse_error", "JSON parse error - nesting deeper than 8");
    /* Exactly 8 deep is fine. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
                "[[[[[[[[]]]]]]]]");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "[[[[[[[[]]]]]]]]");
    expect_open(c);
}

static void test_json_empty_post(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "POST /json HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "{}");
    /* No Content-Length at all, whatever the Content-Type. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "{}");
    /* An empty chunked JSON body is {} too. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "{}");
    /* A real body. */
    send_str(c, "POST /json HTTP/1.1\r\nContent-Type: Application/JSON; charset=utf-8\r\n"
                "Content-Length: 15\r\n\r\n{\"a\": [1, 2.5]}");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "{\"a\":[1,2.5]}");
    expect_open(c);
}

/* ------------------------------------------------------------------ */
/* odd protocol features                                               */
/* ------------------------------------------------------------------ */

/* An Upgrade the server does not do: the request is served as plain HTTP and
 * the connection stays usable (RFC 9110 7.8: a server may ignore Upgrade). */
static void test_upgrade_ignored(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /hello HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello");
    send_str(c, "GET /hello HTTP/1.1\r\n\r\n");
    /* Either served, or a clean close; never a hang. */
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (!c->eof && c->len == c->off && uv_hrtime() < end) {
        pump(c);
        nap(c);
    }
    if (c->len > c->off) {
        next_resp(c, &r);
        assert_int_equal(r.status, 200);
        assert_body(&r, "hello");
    } else {
        assert_true(c->eof);
    }
}

/* The client goes away with a request half sent: the server frees it. */
static void test_client_gone_mid_request(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    settle(c);
    client *c2 = connect_client();
    send_str(c2, "GET /hello HTTP/1.1\r\nX-Hal");
    settle(c2);
    /* teardown closes both and checks that the server closed them */
}

/* Half-close after a complete request: the answer still comes. */
static void test_half_close(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /hello HTTP/1.1\r\n\r\n");
    shutdown(c->fd, SHUT_WR);
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (!c->eof && uv_hrtime() < end) {
        pump(c);
        nap(c);
    }
    assert_true(c->eof);
    /* The answer was written before the server saw the end of input. */
    resp r;
    assert_true(parse_resp(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello");
    assert_int_equal(c->off, c->len);
}

/* Field names are tokens (RFC 9110 5.1). llhttp 8.1 lets a space inside a
 * name and an empty name through; the kernel must refuse such a request
 * (400) or at least not hand the field to modules. */
static void test_invalid_header_name(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /headers HTTP/1.1\r\nBad Header: x\r\nX-Ok: 1\r\n\r\n",
        "GET /headers HTTP/1.1\r\n: novalue\r\nX-Ok: 1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        client *c = connect_client();
        send_str(c, reqs[i]);
        resp r;
        next_resp(c, &r);
        if (r.status == 200) {
            if (r.body_len != strlen("X-Ok=1\n") || memcmp(r.body, "X-Ok=1\n", r.body_len) != 0)
                fail_msg("request %zu: an invalid field name reached the handler: \"%.*s\"", i,
                         (int)r.body_len, r.body);
        } else {
            assert_int_equal(r.status, 400);
            expect_close(c);
        }
        client_close(c);
    }
}

/* obs-fold (RFC 9112 5.2): rejected, or replaced by spaces. */
static void test_obs_fold(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /headers HTTP/1.1\r\nX-A: a\r\n folded\r\nX-B: b\r\n\r\n");
    resp r;
    next_resp(c, &r);
    if (r.status == 200) {
        assert_body(&r, "X-A=a folded\nX-B=b\n");
    } else {
        assert_int_equal(r.status, 400);
        expect_close(c);
    }
}

/* Trailer fields are not header fields (RFC 9110 6.5.1): a trailer must not
 * show up as a request header, where hooks and handlers would trust it
 * (Authorization, Content-Type, X-Request-Id...). */
static void test_trailers_not_headers(void **state)
{
    (void)state;
    client *c = connect_client();
    resp r;
    send_str(c, "POST /headers HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\nhi\r\n0\r\nAuthorization: Bearer forged\r\nX-Request-Id: from-trailer\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_not_equal(rh(&r, "X-Request-Id"), "from-trailer");
    assert_body(&r, "Transfer-Encoding=chunked\n");
    /* A Content-Type in the trailer does not make the body JSON. */
    send_str(c, "POST /json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\n{}\r\n0\r\nContent-Type: application/json\r\n\r\n");
    next_resp(c, &r);
    assert_int_equal(r.status, 415);
}

/* RFC 9112 3.2.2: "A server MUST accept the absolute-form in requests". */
static void test_absolute_form(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET http://example.com/items/4/d?q=abs HTTP/1.1\r\nHost: example.com\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "id=4|name=d|q=abs|route=/items/{id}/{name}");
}

/* ---- async handlers (rx_offload) ---- */

static void test_async_simple(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /slow?n=1 HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "slow1");
    send_str(c, "HEAD /slow HTTP/1.1\r\n\r\n");
    next_resp_m(c, &r, true);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Length", "4");
    expect_open(c);
}

/* Requests pipelined behind an async one wait for it, in order. */
static void test_async_pipelined(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /slow?n=1 HTTP/1.1\r\n\r\n"
                "GET /hello HTTP/1.1\r\n\r\n"
                "GET /slow?n=2 HTTP/1.1\r\n\r\n"
                "GET /slow?n=3 HTTP/1.1\r\n\r\n"
                "POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
                "GET /slow?n=4 HTTP/1.1\r\n\r\nGET /hel");
    resp r;
    next_resp(c, &r);
    assert_body(&r, "slow1");
    next_resp(c, &r);
    assert_body(&r, "hello");
    next_resp(c, &r);
    assert_body(&r, "slow2");
    next_resp(c, &r);
    assert_body(&r, "slow3");
    next_resp(c, &r);
    assert_body(&r, "body");
    next_resp(c, &r);
    assert_body(&r, "slow4");
    /* The rest of the last request arrives after the async ones are done. */
    send_str(c, "lo HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_body(&r, "hello");
    expect_open(c);
}

static void test_async_then_close(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /slow HTTP/1.1\r\nConnection: close\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_body(&r, "slow");
    assert_header(&r, "Connection", "close");
    expect_close(c);
}

/* The client leaves while its request is with the thread pool: the request
 * is freed when the work finishes (LSan checks), the connection at once. */
static void test_async_client_gone(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /slow HTTP/1.1\r\n\r\n");
    uv_run(&W->loop, UV_RUN_NOWAIT); /* dispatched, offloaded */
    client_close(c);
    /* teardown runs the loop until the work is done and everything closed */
}

/* ---- large replies (partial writes) ---- */

static void assert_large(const resp *r)
{
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, LARGE_LEN);
    assert_memory_equal(r->body, large_body, LARGE_LEN);
}

static void test_large_reply(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /large HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\nHEAD /large HTTP/1.1\r\n\r\n"
                "GET /large HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(c, &r);
    assert_large(&r);
    next_resp(c, &r);
    assert_body(&r, "hello");
    next_resp_m(c, &r, true);
    assert_int_equal(r.status, 200);
    char len[24];
    snprintf(len, sizeof(len), "%u", LARGE_LEN);
    assert_header(&r, "Content-Length", len);
    next_resp(c, &r);
    assert_large(&r);
    expect_open(c);
}

/* A request cut in two behind a reply that went out in pieces (uv_write):
 * its second half must still be read. */
static void test_large_reply_then_partial(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /large HTTP/1.1\r\n\r\nGET /hel");
    resp r;
    next_resp(c, &r);
    assert_large(&r);
    send_str(c, "lo HTTP/1.1\r\n\r\n");
    next_resp(c, &r);
    assert_body(&r, "hello");
}

/* The client stops reading mid-reply and goes away. */
static void test_large_reply_client_gone(void **state)
{
    (void)state;
    client *c = connect_client();
    send_str(c, "GET /large HTTP/1.1\r\n\r\n");
    for (int i = 0; i < 5; i++)
        uv_run(&W->loop, UV_RUN_NOWAIT);
    assert_int_equal(W->nconns, 1);
    client_close(c);
}

/* ---- draining (shutdown) ---- */

/* Idle connections close at once; one in the middle of a request finishes
 * it, with Connection: close. */
static void test_drain(void **state)
{
    (void)state;
    client *idle = connect_client();
    client *busy = connect_client();
    client *fresh = connect_client();
    send_str(idle, "GET /hello HTTP/1.1\r\n\r\n");
    resp r;
    next_resp(idle, &r);
    assert_int_equal(r.status, 200);
    send_str(busy, "GET /hello HTTP/1.1\r\nX-Half");
    settle(busy);
    assert_int_equal(W->nconns, 3);

    W->draining = true;
    kn_http_drain(W, false);
    expect_close(idle);
    expect_close(fresh);
    pump(busy);
    assert_false(busy->eof);
    send_str(busy, ": 1\r\n\r\n");
    next_resp(busy, &r);
    W->draining = false;
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "close");
    expect_close(busy);
}

/* Forced: everything closes now, even a reply being written or a request
 * with the thread pool. */
static void test_drain_force(void **state)
{
    (void)state;
    client *writing = connect_client();
    client *async = connect_client();
    send_str(writing, "GET /large HTTP/1.1\r\n\r\n");
    send_str(async, "GET /slow HTTP/1.1\r\n\r\n");
    for (int i = 0; i < 5; i++)
        uv_run(&W->loop, UV_RUN_NOWAIT);
    assert_int_equal(W->nconns, 2);
    kn_http_drain(W, true);
    assert_int_equal(W->nconns, 0);
    uint64_t end = uv_hrtime() + WAIT_NS;
    while (!(writing->eof && async->eof) && uv_hrtime() < end) {
        pump(writing);
        pump(async);
        nap(async);
    }
    assert_true(writing->eof);
    assert_true(async->eof);
    assert_true(writing->len < LARGE_LEN); /* cut short */
    assert_int_equal(async->len, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_get_simple),
        T(test_request_id),
        T(test_split_byte_by_byte),
        T(test_split_header_name_value),
        T(test_empty_header_value),
        T(test_pipelined),
        T(test_pipelined_many),
        T(test_keepalive),
        T(test_connection_close),
        T(test_http10),
        T(test_http10_keepalive),
        T(test_chunked_extensions),
        T(test_body_at_limit),
        T(test_413_content_length),
        T(test_413_chunked),
        T(test_route_body_limit),
        T(test_expect_continue),
        T(test_expect_continue_too_large),
        T(test_expect_other),
        T(test_expect_http10),
        T(test_431_header_too_large),
        T(test_header_budget_boundary),
        T(test_431_long_url),
        T(test_unknown_method_400),
        T(test_garbage_400),
        T(test_malformed_400),
        T(test_early_error_request_id),
        T(test_malformed_after_good),
        T(test_bare_lf),
        T(test_nul_in_header),
        T(test_header_timeout_408),
        T(test_idle_timeout),
        T(test_body_timeout_408),
        T(test_head_no_body),
        T(test_404_405_allow),
        T(test_slash_redirect),
        T(test_params_percent_encoded),
        T(test_req_path_decoded),
        T(test_json_415),
        T(test_json_400),
        T(test_json_empty_post),
        T(test_upgrade_ignored),
        T(test_client_gone_mid_request),
        T(test_half_close),
        T(test_invalid_header_name),
        T(test_obs_fold),
        T(test_trailers_not_headers),
        T(test_absolute_form),
        T(test_async_simple),
        T(test_async_pipelined),
        T(test_async_then_close),
        T(test_async_client_gone),
        T(test_large_reply),
        T(test_large_reply_then_partial),
        T(test_large_reply_client_gone),
        T(test_drain),
        T(test_drain_force),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
