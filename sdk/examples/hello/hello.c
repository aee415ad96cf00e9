/*
 * hello.c — a complete rxd module, written the way a third party writes one:
 * outside the rxd tree, against the installed SDK only (<rx.h>, found with
 * `pkg-config rx-sdk`). Copy this directory to start your own module.
 *
 * What it shows:
 *   GET  /hello/{name}/   public route: {"message": "Hello, <name>!"}
 *   POST /hello/          needs a principal: reads {"name": "..."} with
 *                         rx_req_json() and validates it, answering the DRF
 *                         error shapes API.md uses
 *   rxd hello NAME        a CLI command printing the same greeting
 *   /readyz               a readiness check named "hello.greeting"
 *   /api/schema/          summaries and JSON Schemas for OpenAPI
 *
 * Configuration: keys of the section named after the module, e.g.
 *   [hello]
 *   greeting = Bonjour
 * and, overriding the file, the environment: RXD_HELLO_GREETING=Bonjour.
 *
 * The file must be named after the descriptor: the kernel loads "hello" from
 * <module_path>/hello.so and refuses a file whose descriptor says otherwise.
 *
 * Threading, in short (rx.h has the long version): init runs once on the main
 * thread before any worker exists; handlers run concurrently on worker
 * threads. So this file writes its globals in init only and treats them as
 * read-only afterwards, which is what makes lock-free reads safe.
 */
#include <rx.h>

#include <stdio.h>
#include <string.h>

/* Limits, in characters (Unicode code points, as DRF counts them). */
#define HELLO_NAME_MAX 64
#define HELLO_GREETING_MAX 64
#define HELLO_STR_(x) #x
#define HELLO_STR(x) HELLO_STR_(x)

/* Big enough for any greeting we accept: each character is at most 4 bytes
 * of UTF-8, plus ", " + "!" + NUL. A fixed buffer means no allocation and
 * nothing to free on any path. */
#define HELLO_TEXT_MAX ((HELLO_GREETING_MAX + HELLO_NAME_MAX) * 4 + 4)

/* Set in init, read-only afterwards (see the threading note above). */
static rx_module *self;
/* Borrowed from the config: rx_config_str() values live as long as the
 * process and never change, so keeping the pointer is fine. */
static const char *greeting;

/* Code points in a UTF-8 string: count every byte that does not continue a
 * sequence. Only meaningful on valid UTF-8, which jansson guarantees for
 * every json_t string; for other input see valid_utf8() below. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* jansson refuses invalid UTF-8 when it builds a string, which gives a
 * cheap validity test without writing a decoder. A path parameter is
 * percent-decoded bytes and may be anything, so GET checks it this way. */
static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j); /* json_decref(NULL) is a no-op */
    return j != NULL;
}

/* Why `name` cannot be greeted, as a DRF message, or NULL when it can.
 * Shared by the routes and the command so they agree on the rules. */
static const char *name_problem(const char *name)
{
    if (!valid_utf8(name))
        return "Not a valid string.";
    if (name[0] == '\0')
        return "This field may not be blank.";
    if (utf8_chars(name) > HELLO_NAME_MAX)
        return "Ensure this field has no more than " HELLO_STR(HELLO_NAME_MAX) " characters.";
    return NULL;
}

/* "Hello, World!" into the caller's buffer. */
static void format_greeting(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s, %s!", greeting, name);
}

/* The reply body {"message": "..."}; NULL only when out of memory. The
 * caller hands it to rx_reply_json(), which steals the reference. */
static json_t *message_body(const char *name)
{
    char text[HELLO_TEXT_MAX];
    format_greeting(text, sizeof(text), name);
    return json_pack("{s:s}", "message", text); /* "s" copies the text */
}

/* GET /hello/{name}/ — public. */
static void get_hello(rx_req *req)
{
    /* Percent-decoded capture in the request arena: do not free, do not keep. */
    const char *name = rx_req_param(req, "name");
    const char *problem = name ? name_problem(name) : "This field is required.";
    if (problem != NULL) {
        rx_reply_invalid_field(req, "name", "%s", problem);
        return;
    }
    json_t *body = message_body(name);
    if (body == NULL) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    rx_reply_json(req, 200, body); /* reference stolen: no json_decref here */
}

/* POST /hello/ — needs a principal (the kernel answered 401 before we get
 * here when there is none). Body: {"name": "..."}. */
static void post_hello(rx_req *req)
{
    /* rx_req_json() owns what it returns (freed with the request) and, when it
     * returns NULL, has already sent the 400/413/415: just return. */
    json_t *in = rx_req_json(req);
    if (in == NULL)
        return;
    if (!json_is_object(in)) {
        rx_reply_invalid_field(req, "non_field_errors",
                               "Invalid data. Expected a dictionary, but got %s.",
                               json_is_array(in) ? "list" : "value");
        return;
    }
    json_t *jname = json_object_get(in, "name"); /* borrowed from `in` */
    const char *problem = NULL;
    if (jname == NULL)
        problem = "This field is required.";
    else if (json_is_null(jname))
        problem = "This field may not be null.";
    else if (!json_is_string(jname))
        problem = "Not a valid string.";
    else
        problem = name_problem(json_string_value(jname));
    if (problem != NULL) {
        /* 400 {"name": ["..."], "code": "invalid"} */
        rx_reply_invalid_field(req, "name", "%s", problem);
        return;
    }

    /* Who is calling: borrowed, valid for the request. On a perm route the
     * kind is never RX_PRINCIPAL_NONE. */
    const rx_principal *who = rx_req_principal(req);
    json_t *body = message_body(json_string_value(jname));
    if (body == NULL || json_object_set_new(body, "user_id", json_integer(who->user_id)) != 0) {
        json_decref(body);
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    rx_log(self, RX_LOG_DEBUG, "greeted for user %lld", (long long)who->user_id);
    rx_reply_json(req, 200, body);
}

/* `rxd hello NAME`: main thread, after init, no workers. Returns the exit code. */
static int cmd_hello(rx_module *m, int argc, char **argv)
{
    (void)m;
    if (argc != 2) {
        fprintf(stderr, "usage: rxd hello NAME\n");
        return 2;
    }
    const char *problem = name_problem(argv[1]);
    if (problem != NULL) {
        fprintf(stderr, "rxd hello: %s\n", problem);
        return 1;
    }
    char text[HELLO_TEXT_MAX];
    format_greeting(text, sizeof(text), argv[1]);
    puts(text);
    return 0;
}

/* Readiness: called from /readyz on worker threads and from `rxd check` on
 * the main thread, so it must be fast and thread safe (here: it only reads
 * immutable state). A real module checks what it depends on: its database,
 * an upstream API. Hello has nothing that can go down, so it reports the one
 * thing an operator can get wrong without making the module unusable: an
 * empty greeting (`greeting =` or RXD_HELLO_GREETING=""). Such an instance
 * stays up but keeps itself out of the load balancer until fixed. */
static int ready(char *why, size_t why_len, void *data)
{
    (void)data;
    if (greeting[0] == '\0') {
        snprintf(why, why_len, "hello.greeting is empty");
        return 1;
    }
    return 0;
}

/* JSON Schemas for OpenAPI (components.schemas). The text is copied. */
static const char request_schema[] =
    "{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{\"name\":"
    "{\"type\":\"string\",\"minLength\":1,\"maxLength\":" HELLO_STR(HELLO_NAME_MAX) "}}}";
static const char message_schema[] =
    "{\"type\":\"object\",\"required\":[\"message\"],\"properties\":{"
    "\"message\":{\"type\":\"string\",\"examples\":[\"Hello, World!\"]},"
    "\"user_id\":{\"type\":\"integer\",\"description\":\"POST only: who asked\"}}}";

/* Main thread, before workers: read config, register everything. A non-zero
 * return refuses to start rxd; rx_module_fail() says why. */
static int init(rx_module *m)
{
    self = m;

    /* Relative key: "greeting" in [hello], i.e. "hello.greeting". Invalid
     * configuration that can never work refuses the start, with a reason,
     * rather than failing later on every request. */
    greeting = rx_config_str(m, "greeting", "Hello");
    if (!valid_utf8(greeting)) {
        rx_module_fail(m, "hello.greeting is not valid UTF-8");
        return -1;
    }
    if (utf8_chars(greeting) > HELLO_GREETING_MAX) {
        rx_module_fail(m, "hello.greeting is longer than %d characters", HELLO_GREETING_MAX);
        return -1;
    }

    /* Every registration returns 0 or an RX_E* code; stop at the first
     * failure. No rx_module_fail() for these: the kernel has already recorded
     * a precise reason (e.g. which module registered the same route first) and
     * prints it when init returns non-zero; rx_module_fail() would replace it.
     *
     * Schemas first, so routes can name them. */
    if (rx_schema(m, "HelloRequest", request_schema) != 0 ||
        rx_schema(m, "HelloMessage", message_schema) != 0)
        return -1;

    /* Every route says who may call it: public_route or a perm. One with
     * neither is refused at start-up (deny by default). RX_GET answers HEAD too. */
    if (rx_route(m, RX_GET, "/hello/{name}/", get_hello,
                 &(rx_route_opts){
                     .public_route = true,
                     .summary = "Greet someone",
                     .description = "Answers the configured greeting (hello.greeting, "
                                    "default \"Hello\") for the name in the path.",
                     .response_schema = "HelloMessage",
                 }) != 0)
        return -1;
    if (rx_route(m, RX_POST, "/hello/", post_hello,
                 &(rx_route_opts){
                     .perm = RX_PERM_AUTHENTICATED,
                     .summary = "Greet someone, as an authenticated caller",
                     .description = "Validates the body like the GET route validates the path: "
                                    "400 with {\"name\": [...]} when the name is missing, "
                                    "blank or too long.",
                     .body_limit = 4096, /* a name needs little: refuse big bodies early (413) */
                     .request_schema = "HelloRequest",
                     .response_schema = "HelloMessage",
                 }) != 0)
        return -1;

    if (rx_command(m, "hello", cmd_hello, "NAME: print the greeting for NAME") != 0 ||
        rx_ready_check(m, "hello.greeting", ready, NULL) != 0)
        return -1;

    /* Debug, not info: logs go to stdout, which CLI commands share. */
    rx_log(m, RX_LOG_DEBUG, "greeting is \"%s\"", greeting);
    return 0;
}

/* Nothing to release: no allocation outlives init. A module that opened
 * files or connections closes them here (main thread, workers stopped). */
static void stop(rx_module *m)
{
    rx_log(m, RX_LOG_DEBUG, "stopped");
}

/* The one exported symbol. Name and file name must match ("hello.so"). */
RX_MODULE("hello", "1.0.0",
          .summary = "Example module: greetings (sdk/examples/hello)",
          .init = init,
          .stop = stop);
