/*
 * fuzz_http.c — libFuzzer target for the HTTP/1.1 connection code
 * (kernel/http.c with llhttp, dispatch, replies), over a socketpair.
 *
 * The kernel is set up once as main.c does it (tiny limits so every limit is
 * reachable, a few routes: sync, async through rx_offload, a route body
 * limit, JSON, captures, the kernel's own routes) with one worker made by
 * hand. Per input: a socketpair whose server end goes to kn_http_adopt(),
 * the input written in 1-3 pieces (the first three bytes choose how many
 * and where to cut), the server given time to read each piece, then
 * shutdown(SHUT_WR); the loop runs until the server has closed the
 * connection, while the client end is drained and checked (everything the
 * server writes starts with a status line).
 *
 * Invariant: once the client has half-closed, the server must close the
 * connection by itself (its timeouts are 60 s, far beyond the bound here).
 * A connection still open after the bound is a stall: abort(), unless
 * FUZZ_HTTP_IGNORE_STALL is set, which closes it by force and goes on (to
 * keep fuzzing past a known stall). Nothing may outlive an input: the
 * connection and its requests are freed before the next one (-detect_leaks).
 *
 * Build with coverage of the kernel (the CMake target instruments only this
 * file unless the kn and llhttp libraries get -fsanitize=fuzzer-no-link):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Ikernel -Isdk \
 *     -I/usr/share/include/llhttp $(pkg-config --cflags libuv jansson) \
 *     -DRXD_DEFAULT_MODULE_PATH='"/nonexistent"' -DRXD_DEFAULT_WEB_ROOT='"/nonexistent"' \
 *     -DRXD_DEFAULT_CONFIG='"/nonexistent"' tests/fuzz/fuzz_http.c <kernel sources but main.c> \
 *     /usr/share/llhttp/{llhttp,api,http}.c $(pkg-config --libs libuv jansson ...) -ldl -lpthread
 */
#define _GNU_SOURCE

#include "kn_http.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
static bool ignore_stall;

/* ---- routes ---- */

static void h_hello(rx_req *req)
{
    rx_reply(req, 200, "text/plain", "hello", 5);
}

static void h_echo(rx_req *req)
{
    size_t n;
    const char *b = rx_req_body(req, &n);
    rx_reply(req, 200, "application/octet-stream", b, n);
}

static void h_json(rx_req *req)
{
    json_t *j = rx_req_json(req);
    if (j != NULL)
        rx_reply_json(req, 200, json_incref(j));
}

static void h_params(rx_req *req)
{
    const char *id = rx_req_param(req, "id");
    int64_t n = 0;
    int rc = rx_req_param_id(req, "id", &n);
    const char *q = rx_req_query(req, "q");
    const char *s = rx_req_sprintf(req, "%s|%d|%lld|%s|%s|%s", id ? id : "-", rc, (long long)n,
                                   q ? q : "-", rx_req_path(req), rx_req_client_ip(req));
    rx_reply(req, 200, "text/plain", s, strlen(s));
}

static void h_headers(rx_req *req)
{
    const char *a = rx_req_header(req, "x-a");
    const char *ct = rx_req_header(req, "content-type");
    const char *s = rx_req_sprintf(req, "%s|%s", a ? a : "-", ct ? ct : "-");
    rx_reply_header(req, "X-Echo", a ? a : "-"); /* may refuse CR/LF: fine */
    rx_reply(req, 200, "text/plain", s, strlen(s));
}

static void h_page(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    json_t *items = json_array();
    for (int64_t i = 0; i < limit && offset + i < 30; i++)
        json_array_append_new(items, json_integer(offset + i));
    rx_reply_page(req, items, 30);
}

static void slow_work(void *arg)
{
    (void)arg;
}

static void slow_done(rx_req *req, void *arg)
{
    (void)arg;
    rx_reply(req, 200, "text/plain", "slow", 4);
}

static void h_slow(rx_req *req)
{
    if (rx_offload(req, slow_work, slow_done, NULL) != 0)
        rx_reply_error(req, 500, "error", "offload failed");
}

static void init(void)
{
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &sa, NULL);
    ignore_stall = getenv("FUZZ_HTTP_IGNORE_STALL") != NULL;
    char err[512];
    if (kn_config_parse(&kn_conf, config_text, strlen(config_text), "fuzz.conf", err,
                        sizeof(err)) != 0 ||
        kn_settings_load(err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    kn_reg.router = kn_router_new();
    kn_reg.open = true;
    if (kn_builtin_routes() != 0)
        abort();
    const rx_route_opts pub = {.public_route = true};
    const rx_route_opts big = {.public_route = true, .body_limit = 256};
    const rx_route_opts arr = {.public_route = true, .list_style = RX_LIST_ARRAY};
    int rc = 0;
    rc |= kn_route_add(NULL, RX_GET, "/hello", h_hello, &pub);
    rc |= kn_route_add(NULL, RX_POST | RX_PUT | RX_PATCH, "/echo", h_echo, &pub);
    rc |= kn_route_add(NULL, RX_POST, "/big", h_echo, &big);
    rc |= kn_route_add(NULL, RX_POST | RX_PUT, "/json", h_json, &pub);
    rc |= kn_route_add(NULL, RX_GET | RX_DELETE, "/items/{id}/", h_params, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/items/{id}/{name}", h_params, &pub);
    rc |= kn_route_add(NULL, RX_GET | RX_POST, "/headers", h_headers, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/page/", h_page, &pub);
    rc |= kn_route_add(NULL, RX_GET, "/array/", h_page, &arr);
    rc |= kn_route_add(NULL, RX_GET | RX_POST, "/slow", h_slow, &pub);
    if (rc != 0) {
        fprintf(stderr, "fuzz_http: %s\n", kn_reg.error);
        abort();
    }
    kn_registry_seal();
    if (kn_openapi_prepare(err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_http: openapi: %s\n", err);
        abort();
    }
    W = calloc(1, sizeof(*W));
    if (W == NULL || uv_loop_init(&W->loop) != 0)
        abort();
    W->loop.data = W;
    W->rid_base = 0x0123456789abcdefull;
    W->listen_fd = -1;
    workers_arr[0] = W;
    kn_workers = workers_arr;
    kn_nworkers = 1;
    if (kn_metrics_init(W) != 0)
        abort();
}

/* ---- the client end ---- */

typedef struct client {
    int fd, sfd;
    size_t got;    /* bytes the server wrote */
    char first[9]; /* their first bytes */
} client;

static void drain(client *c)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (size_t i = 0; i < (size_t)n && c->got + i < sizeof(c->first); i++)
            c->first[c->got + i] = buf[i];
        c->got += (size_t)n;
    }
}

static void step(client *c)
{
    uv_run(&W->loop, UV_RUN_NOWAIT);
    drain(c);
}

static bool server_closed(void)
{
    return W->nconns == 0 && !uv_loop_alive(&W->loop);
}

static void send_piece(client *c, const uint8_t *p, size_t n)
{
    int spins = 0;
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR) && ++spins < 10000) {
            step(c);
            continue;
        }
        return; /* EPIPE: the server answered and closed */
    }
    /* Let the server read this piece on its own. */
    for (int i = 0; i < 64; i++) {
        step(c);
        int unread = 0;
        if (W->nconns == 0 || ioctl(c->sfd, FIONREAD, &unread) != 0 || unread == 0)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        init();
        inited = true;
    }
    /* Split points: first byte = pieces (1-3), next two = where to cut. */
    size_t cuts[2] = {0, 0};
    size_t ncuts = 0;
    if (size >= 3) {
        ncuts = data[0] % 3;
        size_t body = size - 3;
        cuts[0] = body * data[1] / 255;
        cuts[1] = body * data[2] / 255;
        if (cuts[0] > cuts[1]) {
            size_t t = cuts[0];
            cuts[0] = cuts[1];
            cuts[1] = t;
        }
        if (ncuts == 1)
            cuts[0] = cuts[1];
        data += 3;
        size -= 3;
    }

    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        abort();
    client c = {.fd = fds[1], .sfd = fds[0]};
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    if (kn_http_adopt(W, c.sfd) != 0)
        abort();

    size_t at = 0;
    for (size_t i = 0; i < ncuts; i++) {
        send_piece(&c, data + at, cuts[i] - at);
        at = cuts[i];
    }
    send_piece(&c, data + at, size - at);
    shutdown(c.fd, SHUT_WR);

    /* The server must close the connection on its own. */
    uint64_t end = uv_hrtime() + 300ull * 1000 * 1000; /* 300 ms */
    while (!server_closed()) {
        step(&c);
        if (server_closed())
            break;
        if (uv_hrtime() > end) {
            if (!ignore_stall) {
                fprintf(stderr, "fuzz_http: the connection is still open after the client "
                                "half-closed (stall)\n");
                abort();
            }
            static unsigned long stalls;
            if (stalls++ == 0)
                fprintf(stderr, "fuzz_http: stall (connection open after the client half-closed); "
                                "closing by force, FUZZ_HTTP_IGNORE_STALL is set\n");
            kn_http_drain(W, true);
            while (uv_loop_alive(&W->loop))
                uv_run(&W->loop, UV_RUN_ONCE);
            break;
        }
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        poll(&p, 1, 1);
    }
    drain(&c);
    /* Whatever was written back is HTTP/1.1 responses. */
    size_t chk = c.got < sizeof(c.first) ? c.got : sizeof(c.first);
    if (memcmp(c.first, "HTTP/1.1 ", chk) != 0) {
        fprintf(stderr, "fuzz_http: the server wrote something that is not a response\n");
        abort();
    }
    close(c.fd);
    if (W->conns != NULL || atomic_load(&W->open_conns) != 0)
        abort();
    return 0;
}
