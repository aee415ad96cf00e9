/*
 * http.c — one HTTP/1.1 connection: bytes in through llhttp, limits and
 * timeouts, replies out.
 *
 * A connection handles one request at a time. Pipelined requests stay in the
 * read buffer: the parser pauses at the end of each message, the request is
 * dispatched, and parsing resumes when its reply has gone out. A handler that
 * answers at once costs no extra syscalls (the reply is written with
 * uv_try_write and parsing continues in the same read callback); one that goes
 * async stops reading until it has answered, which also bounds what a client
 * can queue. One uv_timer per connection enforces the header, body and idle
 * keep-alive timeouts.
 */
#include "kn_http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Connections open in the whole process: max_connections is a process limit
 * (SO_REUSEPORT spreads connections unevenly, so per-worker shares would
 * refuse some while another worker has room). */
atomic_llong kn_open_total;

static void conn_close(kn_conn *c);
static void read_stop(kn_conn *c);
static void conn_feed(kn_conn *c, const char *data, size_t len);
static void req_free(rx_req *req);

/* ---- timers ---- */

static void on_timeout(uv_timer_t *t)
{
    kn_conn *c = t->data;
    if (c->state == KN_HEADERS || c->state == KN_BODY) {
        /* Part of a request arrived, then nothing: tell the client why. */
        c->err_status = 408;
        if (c->req != NULL && !c->req->replied) {
            c->req->close_after = true;
            c->state = KN_HANDLING;
            read_stop(c);
            kn_reply_early(c->req, 408, "request_timeout", "Request timeout.");
            return;
        }
    }
    conn_close(c);
}

static void timer_arm(kn_conn *c, long long ms)
{
    uv_timer_start(&c->timer, on_timeout, (uint64_t)ms, 0);
}

/* ---- llhttp callbacks: build the request in its arena ---- */

static rx_req *req_new(kn_conn *c)
{
    kn_arena a = {0};
    rx_req *req = kn_arena_alloc(&a, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->arena = a;
    req->conn = c;
    req->w = c->w;
    req->start_ns = kn_now_ns();
    req->body = "";
    req->body_limit = (size_t)kn_set.body_limit;
    return req;
}

static int on_message_begin(llhttp_t *p)
{
    kn_conn *c = p->data;
    c->req = req_new(c);
    if (c->req == NULL)
        return HPE_USER;
    if (c->state == KN_IDLE)
        timer_arm(c, kn_set.header_timeout_ms);
    c->state = KN_HEADERS;
    return 0;
}

static bool header_budget(kn_conn *c, size_t more)
{
    rx_req *r = c->req;
    r->header_bytes += more;
    if (r->header_bytes > (size_t)kn_set.header_bytes) {
        c->err_status = 431;
        return false;
    }
    return true;
}

static int append(rx_req *r, char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = kn_arena_realloc(&r->arena, *buf, *cap, nc);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    if (!header_budget(c, n))
        return HPE_USER;
    return append(r, &r->url, &r->url_len, &r->url_cap, at, n) ? HPE_USER : 0;
}

/* Header names and values may arrive in pieces; each piece extends the last
 * header (names and values are short: re-copying them costs less than
 * tracking capacities). */
/* RFC 9110 token characters: anything else in a field name is refused
 * rather than handed to modules. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    if (!header_budget(c, n))
        return HPE_USER;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)at[i])) {
            c->err_status = 400;
            return HPE_USER;
        }
    if (r->headers_done) {
        /* A trailer of a chunked body: never mixed with the headers (a
         * trailer could otherwise forge Authorization). Counted, dropped. */
        r->in_value = false;
        return 0;
    }
    if (r->nhdrs == 0 || r->in_value) {
        if (r->nhdrs == r->hdrs_cap) {
            size_t nc = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
            kn_header *nh = kn_arena_realloc(&r->arena, r->hdrs, r->hdrs_cap * sizeof(kn_header),
                                             nc * sizeof(kn_header));
            if (nh == NULL)
                return HPE_USER;
            r->hdrs = nh;
            r->hdrs_cap = nc;
        }
        r->nhdrs++;
        r->in_value = false;
    }
    kn_header *h = &r->hdrs[r->nhdrs - 1];
    char *nb = kn_arena_realloc(&r->arena, h->name, h->name ? h->nlen + 1 : 0, h->nlen + n + 1);
    if (nb == NULL)
        return HPE_USER;
    memcpy(nb + h->nlen, at, n);
    h->name = nb;
    h->nlen += n;
    nb[h->nlen] = '\0';
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    if (!header_budget(c, n))
        return HPE_USER;
    if (r->headers_done)
        return 0; /* trailer */
    if (r->nhdrs == 0 || r->hdrs[r->nhdrs - 1].nlen == 0) {
        c->err_status = 400; /* a value without a name */
        return HPE_USER;
    }
    r->in_value = true;
    kn_header *h = &r->hdrs[r->nhdrs - 1];
    char *vb = kn_arena_realloc(&r->arena, h->value, h->value ? h->vlen + 1 : 0, h->vlen + n + 1);
    if (vb == NULL)
        return HPE_USER;
    memcpy(vb + h->vlen, at, n);
    h->value = vb;
    h->vlen += n;
    vb[h->vlen] = '\0';
    return 0;
}

static const char *hdr(rx_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value ? r->hdrs[i].value : "";
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    r->method_name = llhttp_method_name(llhttp_get_method(p));
    r->method = kn_method_from_name(r->method_name, strlen(r->method_name));
    r->headers_done = true;
    if (r->url == NULL)
        r->url = kn_arena_strndup(&r->arena, "/", 1), r->url_len = 1;
    if (strncasecmp(r->url, "http://", 7) == 0 || strncasecmp(r->url, "https://", 8) == 0) {
        /* absolute-form (RFC 9112 3.2.2): the path starts after the authority. */
        char *auth = strstr(r->url, "://") + 3;
        char *slash = auth + strcspn(auth, "/?");
        if (*slash == '/') {
            r->url_len -= (size_t)(slash - r->url);
            r->url = slash;
        } else {
            r->url = rx_req_sprintf(r, "/%s", slash);
            r->url_len = strlen(r->url);
        }
    }
    char *q = memchr(r->url, '?', r->url_len);
    r->path = r->url;
    if (q != NULL) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    r->path_len = strlen(r->path);
    r->chunked = (p->flags & F_CHUNKED) != 0;

    /* Route now: the body limit and 100-continue depend on the route. */
    kn_router_match(kn_reg.router, r->method ? r->method : 0, r->path, r->path_len, &r->match);
    r->route = r->match.route;
    if (r->route != NULL && r->route->opts.body_limit > 0)
        r->body_limit = r->route->opts.body_limit;

    bool has_body = r->chunked || p->content_length > 0;
    if (has_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > r->body_limit) {
        c->err_status = 413;
        return HPE_USER;
    }
    const char *expect = hdr(r, "expect");
    if (expect != NULL && has_body) {
        if (strcasecmp(expect, "100-continue") != 0) {
            c->err_status = 417;
            return HPE_USER;
        }
        if (p->http_major == 1 && p->http_minor >= 1) {
            /* The body is acceptable as far as we can tell: ask for it. */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
    }
    if (has_body) {
        c->state = KN_BODY;
        timer_arm(c, kn_set.body_timeout_ms);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    if (r->body_len + n > r->body_limit) {
        c->err_status = 413;
        return HPE_USER;
    }
    if (r->body_cap == 0) {
        /* Content-Length known: allocate once. */
        size_t want = (p->flags & F_CONTENT_LENGTH) ? (size_t)p->content_length + n + 1 : 0;
        if (want > r->body_limit + 1)
            want = r->body_limit + 1;
        if (want > 0) {
            r->body = kn_arena_alloc(&r->arena, want);
            if (r->body == NULL)
                return HPE_USER;
            r->body_cap = want;
        } else {
            r->body = NULL;
        }
    }
    if (append(r, &r->body, &r->body_len, &r->body_cap, at, n))
        return HPE_USER;
    return 0;
}

/* A chunk announcing more than the limit allows is refused before its data. */
static int on_chunk_header(llhttp_t *p)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    if (p->content_length > r->body_limit - r->body_len) {
        c->err_status = 413;
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    kn_conn *c = p->data;
    rx_req *r = c->req;
    r->keep_alive = llhttp_should_keep_alive(p);
    c->state = KN_HANDLING;
    uv_timer_stop(&c->timer);
    return HPE_PAUSED;
}

static llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    kn_conn *c = h->data;
    /* One buffer per worker: parsing is synchronous, and whatever must
     * outlive the callback is copied into the request or c->pending. */
    buf->base = c->w->readbuf;
    buf->len = sizeof(c->w->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    kn_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == KN_BODY)
        timer_arm(c, kn_set.body_timeout_ms);
    conn_feed(c, buf->base, (size_t)nread);
}

static void read_start(kn_conn *c)
{
    if (!c->reading && c->state != KN_CLOSING) {
        c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
    }
}

static void read_stop(kn_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void parse_error(kn_conn *c, llhttp_errno_t err)
{
    rx_req *r = c->req;
    if (r == NULL) {
        r = c->req = req_new(c);
        if (r == NULL) {
            conn_close(c);
            return;
        }
        r->method_name = "-";
        r->path = "-";
        r->query = "";
    }
    if (r->path == NULL) {
        r->path = r->url ? r->url : "-";
        r->query = "";
    }
    if (r->method_name == NULL)
        r->method_name = "-";
    r->close_after = true;
    c->state = KN_HANDLING;
    uv_timer_stop(&c->timer);
    read_stop(c);
    switch (c->err_status) {
    case 413:
        kn_reply_early(r, 413, "request_too_large", "Request body is too large.");
        break;
    case 417:
        kn_reply_early(r, 417, "expectation_failed", "Expectation failed.");
        break;
    case 431:
        kn_reply_early(r, 431, "headers_too_large", "Request header fields are too large.");
        break;
    default:
        (void)err; /* an unknown method and a garbled line look alike to llhttp */
        kn_reply_early(r, 400, "bad_request", "Malformed HTTP request.");
    }
}

/* Parse bytes; dispatch each complete request. */
static void conn_feed(kn_conn *c, const char *data, size_t len)
{
    while (len > 0) {
        llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
        if (err == HPE_OK)
            return;
        if (err == HPE_PAUSED_UPGRADE) {
            /* We speak no other protocol: ignore the Upgrade and go on with
             * HTTP/1.1 (what RFC 9110 allows a server to do). */
            const char *pos = llhttp_get_error_pos(&c->parser);
            len -= (size_t)(pos - data);
            data = pos;
            llhttp_resume_after_upgrade(&c->parser);
            continue;
        }
        if (err != HPE_PAUSED) {
            parse_error(c, err);
            return;
        }
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = (size_t)(pos - data);
        data = pos;
        len -= used;
        c->dispatching = true;
        kn_dispatch(c->req);
        c->dispatching = false;
        if (c->state == KN_CLOSING)
            return;
        if (c->req != NULL) {
            /* The reply is not out yet: keep the rest and wait. */
            read_stop(c);
            if (len > 0) {
                char *p = malloc(len);
                if (p == NULL) {
                    conn_close(c);
                    return;
                }
                memcpy(p, data, len);
                free(c->pending);
                c->pending = p;
                c->pending_len = len;
            }
            return;
        }
        llhttp_resume(&c->parser);
    }
}

/* ---- writing ---- */

static void finish_request(kn_conn *c)
{
    rx_req *r = c->req;
    c->req = NULL;
    bool close = r->close_after || !r->keep_alive || c->w->draining;
    r->conn = NULL;
    kn_req_maybe_free(r);
    if (close) {
        conn_close(c);
        return;
    }
    c->state = KN_IDLE;
    c->err_status = 0;
    timer_arm(c, kn_set.keepalive_timeout_ms);
}

static void resume_after_async(kn_conn *c)
{
    /* Continue with pipelined bytes that arrived while the request ran. */
    llhttp_resume(&c->parser);
    if (c->pending != NULL) {
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, p, n);
        free(p);
    }
    /* Read on unless a request is with its handler: also when the pending
     * bytes held only the start of the next request. */
    if (c->state != KN_CLOSING && c->state != KN_HANDLING)
        read_start(c);
}

static void on_write(uv_write_t *w, int status)
{
    kn_conn *c = w->data;
    c->writing = false;
    if (status < 0 || c->state == KN_CLOSING) {
        if (c->req != NULL) {
            rx_req *r = c->req;
            c->req = NULL;
            r->conn = NULL;
            kn_req_maybe_free(r);
        }
        conn_close(c);
        return;
    }
    finish_request(c);
    if (c->state != KN_CLOSING)
        resume_after_async(c);
}

void kn_http_send(rx_req *r)
{
    kn_conn *c = r->conn;
    if (c == NULL || c->state == KN_CLOSING)
        return;
    bool sync = c->dispatching;
    uv_buf_t bufs[2];
    bufs[0] = uv_buf_init(r->rhead, (unsigned)r->rhead_len);
    bufs[1] = uv_buf_init(r->rbody, (unsigned)r->rbody_len);
    unsigned nb = r->rbody_len > 0 ? 2 : 1;
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nb);
    size_t total = r->rhead_len + r->rbody_len;
    if (n >= 0 && (size_t)n == total) {
        finish_request(c);
        /* When called from conn_feed() it sees c->req == NULL and keeps
         * parsing; after async work we resume parsing here. */
        if (!sync && c->state != KN_CLOSING)
            resume_after_async(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        c->req = NULL;
        r->conn = NULL;
        kn_req_maybe_free(r);
        conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    /* Skip what went out; queue the rest. */
    for (unsigned i = 0; i < nb && done > 0; i++) {
        size_t take = done < bufs[i].len ? done : bufs[i].len;
        bufs[i].base += take;
        bufs[i].len -= take;
        done -= take;
    }
    unsigned first = bufs[0].len == 0 ? 1 : 0;
    c->writing = true;
    c->wreq.data = c;
    /* The request (and its buffers) lives until on_write. */
    read_stop(c);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs + first, nb - first, on_write) != 0) {
        c->writing = false;
        c->req = NULL;
        r->conn = NULL;
        kn_req_maybe_free(r);
        conn_close(c);
    }
}

/* ---- lifetime ---- */

static void req_free(rx_req *req)
{
    if (req->json)
        json_decref(req->json);
    if (req->rbody_free)
        free(req->rbody);
    kn_arena a = req->arena;
    kn_arena_free(&a);
}

void kn_req_maybe_free(rx_req *req)
{
    if (req->conn == NULL && req->pending == 0)
        req_free(req);
}

static void on_handle_closed(uv_handle_t *h)
{
    kn_conn *c = h->data;
    if (--c->handles > 0)
        return;
    free(c->pending);
    free(c);
}

static void conn_close(kn_conn *c)
{
    if (c->state == KN_CLOSING)
        return;
    c->state = KN_CLOSING;
    kn_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub_explicit(&kn_open_total, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->open_conns, 1, memory_order_relaxed);
    if (c->req != NULL && !c->writing) {
        /* A request still with its handler: it finishes on its own and its
         * reply is dropped. One being written is freed in on_write. */
        rx_req *r = c->req;
        c->req = NULL;
        r->conn = NULL;
        kn_req_maybe_free(r);
    }
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void conn_start(kn_conn *c);

void kn_on_connection(uv_stream_t *server, int status)
{
    kn_worker *w = server->data;
    if (status < 0)
        return;
    kn_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || atomic_load_explicit(&kn_open_total, memory_order_relaxed) >= kn_set.max_connections ||
        w->draining) {
        /* Over the limit: refuse this one rather than starve the others. */
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    conn_start(c);
}

int kn_http_adopt(kn_worker *w, int fd)
{
    kn_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RX_ENOMEM;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return RX_EINVAL;
    }
    conn_start(c);
    return 0;
}

static void conn_start(kn_conn *c)
{
    kn_worker *w = c->w;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->state = KN_IDLE;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_fetch_add_explicit(&kn_open_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->open_conns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->total_conns, 1, memory_order_relaxed);
    /* The first request must start within the header timeout. */
    timer_arm(c, kn_set.header_timeout_ms);
    read_start(c);
}

void kn_http_drain(kn_worker *w, bool force)
{
    kn_conn *c = w->conns;
    while (c != NULL) {
        kn_conn *next = c->next;
        /* Idle connections go now; busy ones close after their reply. */
        if (force || c->state == KN_IDLE)
            conn_close(c);
        c = next;
    }
}
