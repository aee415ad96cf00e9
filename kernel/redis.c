/* redis.c — placeholder until the Redis client lands (being written). */
#include "kn_data.h"

int kn_redis_worker_start(kn_worker *w)
{
    (void)w;
    return 0;
}
void kn_redis_worker_stop(kn_worker *w)
{
    (void)w;
}
bool kn_redis_idle(const kn_worker *w)
{
    (void)w;
    return true;
}
int kn_redis_ready(char *why, size_t len, void *data)
{
    (void)why, (void)len, (void)data;
    return 0;
}
void kn_redis_free(void)
{
}
