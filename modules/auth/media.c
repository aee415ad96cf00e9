/*
 * media.c — profile pictures: the upload check (JPEG or PNG by magic bytes,
 * never by name or declared type), storage under media.root with a random
 * name, and the public GET /media/profile_pictures/{file} that serves them.
 * File system work runs on the thread pool.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(const unsigned char *d, size_t n)
{
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return "jpg";
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "png";
    return NULL;
}

const char *auth_picture_check(const rx_part *p)
{
    if ((long long)p->len > auth_cfg.picture_max)
        return "File too large. Maximum size is 5 MB.";
    if (kind_of((const unsigned char *)p->data, p->len) == NULL)
        return "Upload a valid image. The file you uploaded was either not an image or a "
               "corrupted image.";
    return NULL;
}

static int mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int auth_picture_store(auth_ctx *c)
{
    const rx_part *p = c->picture;
    unsigned char r[16];
    char hex[33], dir[1024], path[1200];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    snprintf(c->picture_name, sizeof c->picture_name, "%s.%s", hex,
             kind_of((const unsigned char *)p->data, p->len));
    snprintf(dir, sizeof dir, "%s/profile_pictures", auth_cfg.media_root);
    if (mkdirs(dir) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/%s", dir, c->picture_name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    size_t off = 0;
    while (off < p->len) {
        ssize_t w = write(fd, p->data + off, p->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(path);
            goto fail;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        unlink(path);
        goto fail;
    }
    return 0;
fail:
    c->picture_name[0] = '\0';
    return -1;
}

void auth_picture_remove(const char *name)
{
    char path[1200];
    if (name == NULL || *name == '\0' || strchr(name, '/') != NULL)
        return;
    snprintf(path, sizeof path, "%s/profile_pictures/%s", auth_cfg.media_root, name);
    unlink(path);
}

typedef struct media_read {
    char path[1200];
    char *data;
    size_t len;
    bool found;
} media_read;

static void read_work(void *arg)
{
    media_read *m = arg;
    FILE *f = fopen(m->path, "rb");
    if (f == NULL)
        return;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= (off_t)(64 << 20)) {
        m->data = malloc((size_t)st.st_size + 1);
        if (m->data != NULL) {
            m->len = fread(m->data, 1, (size_t)st.st_size, f);
            m->found = true;
        }
    }
    fclose(f);
}

static void read_done(rx_req *req, void *arg)
{
    media_read *m = arg;
    if (!m->found) {
        free(m->data);
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    const char *ct = kind_of((const unsigned char *)m->data, m->len);
    rx_reply_header(req, "Cache-Control", "public, max-age=86400");
    rx_reply(req, 200, ct && strcmp(ct, "png") == 0 ? "image/png" : "image/jpeg", m->data, m->len);
    free(m->data);
}

/* Names are what auth_picture_store makes: 32 hex digits + .jpg/.png.
 * Anything else is 404, so no path can leave the directory. */
void auth_media_get(rx_req *req)
{
    const char *f = rx_req_param(req, "file");
    size_t n = f ? strlen(f) : 0;
    bool ok = n == 36 && (strcmp(f + 32, ".jpg") == 0 || strcmp(f + 32, ".png") == 0);
    for (size_t i = 0; ok && i < 32; i++)
        ok = (f[i] >= '0' && f[i] <= '9') || (f[i] >= 'a' && f[i] <= 'f');
    if (!ok) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    media_read *m = rx_req_alloc(req, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s/profile_pictures/%s", auth_cfg.media_root, f);
    if (rx_offload(req, read_work, read_done, m) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}
