/*
 * static.c — the few static files rxd serves itself: Swagger UI and Redoc
 * (fetched from npm at build time into web_root) and their two pages.
 * Files are mmap()ed on first use and kept: nothing is read at start-up, so
 * idle memory stays small, and a reply points into the mapping (no copy).
 */
#include "kn_http.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sfile {
    char name[64];
    void *data;
    size_t len;
    char etag[48];
    struct sfile *next;
} sfile;

static sfile *files;
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;

static bool name_ok(const char *n)
{
    if (n == NULL || n[0] == '\0' || n[0] == '.' || strlen(n) >= 64)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

static const char *content_type(const char *n)
{
    const char *dot = strrchr(n, '.');
    if (dot == NULL)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".png") == 0)
        return "image/png";
    if (strcmp(dot, ".json") == 0)
        return "application/json";
    if (strcmp(dot, ".map") == 0)
        return "application/json";
    return "application/octet-stream";
}

static sfile *load(const char *name)
{
    for (sfile *f = files; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", kn_set.web_root, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return NULL;
    sfile *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        munmap(p, (size_t)st.st_size);
        return NULL;
    }
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->data = p;
    f->len = (size_t)st.st_size;
    snprintf(f->etag, sizeof(f->etag), "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtime);
    f->next = files;
    files = f;
    return f;
}

void kn_static_serve(rx_req *req, const char *name)
{
    bool page = name != NULL && strstr(name, ".html") != NULL;
    if (!name_ok(name)) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    pthread_mutex_lock(&files_lock);
    sfile *f = load(name);
    pthread_mutex_unlock(&files_lock);
    if (f == NULL) {
        if (page) {
            kn_log(RX_LOG_WARN, NULL, "API docs page %s/%s is missing (build with RXD_WEB_ASSETS=ON)",
                   kn_set.web_root, name);
            rx_reply_error(req, 503, "service_unavailable",
                           "API documentation assets are not installed.");
        } else {
            rx_reply_error(req, 404, "not_found", "Not found.");
        }
        return;
    }
    /* Pages revalidate (they name the assets); assets are pinned by version. */
    kn_reply_header_raw(req, "Cache-Control", page ? "no-cache" : "public, max-age=86400");
    kn_reply_header_raw(req, "ETag", f->etag);
    const char *inm = rx_req_header(req, "if-none-match");
    if (inm != NULL && strstr(inm, f->etag) != NULL) {
        kn_reply_static(req, 304, NULL, NULL, 0);
        return;
    }
    kn_reply_static(req, 200, content_type(name), f->data, f->len);
}

void kn_static_free(void)
{
    while (files) {
        sfile *n = files->next;
        munmap(files->data, files->len);
        free(files);
        files = n;
    }
}
