/* A module whose init fails with a reason, and one that registers a route
 * another module already has: both must stop start-up with a clear message. */
#include <rx.h>

static void h(rx_req *req)
{
    rx_reply(req, 200, "text/plain", "x", 1);
}

static int init(rx_module *m)
{
    const char *mode = rx_config_str(m, "mode", "fail");
    if (mode[0] == 'd') /* "dup": clash with testkit's echo route */
        return rx_route(m, RX_GET, "/test/echo/", h, &(rx_route_opts){.public_route = true});
    rx_module_fail(m, "failinit.mode is '%s'; this module always fails", mode);
    return -1;
}

RX_MODULE("failinit", "1.0.0", .init = init);
