/* A module built for a future ABI major: the kernel must refuse it by name. */
#include <rx.h>

static int init(rx_module *m)
{
    (void)m;
    return 0;
}

RX_EXPORT const rx_module_desc rx_module_descriptor = {
    .abi_major = RX_ABI_MAJOR + 1, .abi_minor = 0, .size = sizeof(rx_module_desc),
    .name = "badabi", .version = "9.0.0", .init = init};
