/* A module that requires one that is not enabled: start-up must say so. */
#include <rx.h>

static int init(rx_module *m)
{
    (void)m;
    return 0;
}

RX_MODULE("needy", "1.0.0", .init = init, .requires = RX_REQUIRES("testkit", "nosuchmodule"));
