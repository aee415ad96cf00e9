/* jobs.c — placeholder until durable jobs land (being written). */
#include "kn_data.h"

#include <stdio.h>

int kn_jobs_worker_start(kn_worker *w)
{
    (void)w;
    return 0;
}
void kn_jobs_worker_stop(kn_worker *w)
{
    (void)w;
}
bool kn_jobs_idle(const kn_worker *w)
{
    (void)w;
    return true;
}
int kn_jobs_command(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "rxd jobs: not implemented yet\n");
    return 1;
}
void kn_jobs_free(void)
{
}
