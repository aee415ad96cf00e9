/*
 * main.c — the rxd command line: serve, check, routes, openapi, version,
 * and the commands modules register. Every command that needs modules loads
 * the config, loads and initialises the modules, then does its one thing.
 */
#include "kn_data.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *config_path(const char *given)
{
    if (given != NULL)
        return given;
    const char *env = getenv("RXD_CONFIG");
    if (env != NULL && *env != '\0')
        return env;
    if (access("conf/rxd.conf", R_OK) == 0)
        return "conf/rxd.conf";
    if (access(RXD_DEFAULT_CONFIG, R_OK) == 0)
        return RXD_DEFAULT_CONFIG;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rxd [--config FILE] COMMAND [ARGS]\n\n"
               "commands:\n"
               "  serve [--migrate]   run the server with the configured modules (and jobs)\n"
               "  worker [--migrate]  run jobs only, no HTTP\n"
               "  migrate [--status]  apply (or list) the modules' database migrations\n"
               "  jobs                show the job queue: depth, running, dead\n"
               "  check               validate the config and the modules, then exit\n"
               "  routes              list every route by module\n"
               "  openapi             print the OpenAPI 3.1 document\n"
               "  version             print versions\n");
    for (size_t i = 0; i < kn_reg.commands.n; i++)
        fprintf(f, "  %-19s %s (module %s)\n", kn_reg.commands.v[i].name,
                kn_reg.commands.v[i].usage, kn_reg.commands.v[i].module->desc->name);
    fprintf(f, "\nconfig: --config FILE, else $RXD_CONFIG, else ./conf/rxd.conf, else %s;\n"
               "every key can be set by the environment: RXD_ + KEY upper-cased, dots as "
               "underscores.\n",
            RXD_DEFAULT_CONFIG);
}

/* Keys the kernel knows; a module's section is named after the module. */
static const char *kernel_keys[] = {
    "listen", "workers", "modules", "module_path", "max_connections", "shutdown_grace",
    "trusted_proxies", "web_root", "limits.header_bytes", "limits.body", "limits.json_depth",
    "timeouts.header", "timeouts.body", "timeouts.keepalive", "cors.allowed_origins",
    "cors.allow_credentials", "cors.max_age", "cors.allowed_headers", "cors.expose_headers",
    "log.level", "log.access", NULL};
/* Sections reserved for the data layer and shared settings. */
static const char *shared_sections[] = {"database", "redis", "jwt", "ratelimit", "jobs",
                                        "metrics", "media", NULL};

static int check_keys(void)
{
    int warnings = 0;
    for (size_t i = 0; i < kn_config_file_count(kn_conf); i++) {
        int line;
        const char *k = kn_config_file_key(kn_conf, i, &line);
        bool known = false;
        for (int j = 0; kernel_keys[j] && !known; j++)
            known = strcmp(kernel_keys[j], k) == 0;
        const char *dot = strchr(k, '.');
        if (!known && dot != NULL) {
            size_t sl = (size_t)(dot - k);
            for (int j = 0; shared_sections[j] && !known; j++)
                known = strlen(shared_sections[j]) == sl && strncmp(shared_sections[j], k, sl) == 0;
            for (size_t j = 0; j < kn_reg.modules.n && !known; j++) {
                const char *mn = kn_reg.modules.v[j]->desc->name;
                known = strlen(mn) == sl && strncmp(mn, k, sl) == 0;
            }
        }
        if (!known) {
            fprintf(stderr, "rxd check: %s:%d: unknown key '%s'\n", kn_config_path(kn_conf), line,
                    k);
            warnings++;
        }
    }
    return warnings;
}

static int cmd_routes(void)
{
    const char *last = NULL;
    for (size_t m = 0; m <= kn_reg.modules.n; m++) {
        kn_module *mod = m < kn_reg.modules.n ? kn_reg.modules.v[m] : NULL;
        const char *name = mod ? mod->desc->name : "kernel";
        for (size_t i = 0; i < kn_reg.routes.n; i++) {
            kn_route *r = kn_reg.routes.v[i];
            if (r->module != mod)
                continue;
            if (last != name) {
                printf("%s%s%s%s\n", last ? "\n" : "", name, mod ? " " : "",
                       mod ? mod->desc->version : "");
                last = name;
            }
            char meth[96];
            kn_methods_text(r->methods, meth, sizeof(meth));
            printf("  %-22s %-44s %-22s %s\n", meth, r->path,
                   r->opts.public_route ? "public" : r->opts.perm,
                   r->opts.summary ? r->opts.summary : "");
        }
    }
    return 0;
}

static int cmd_openapi(void)
{
    char err[512];
    char *doc = kn_openapi_build(&kn_reg, err, sizeof(err));
    if (doc == NULL) {
        fprintf(stderr, "rxd openapi: %s\n", err);
        return 1;
    }
    puts(doc);
    free(doc);
    return 0;
}

static int cmd_version(void)
{
    printf("rxd %s (SDK ABI %d.%d)\nlibuv %s, llhttp %d.%d.%d, jansson %s, hiredis %d.%d.%d\n",
           KN_VERSION, RX_ABI_MAJOR, RX_ABI_MINOR, uv_version_string(), LLHTTP_VERSION_MAJOR,
           LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH, JANSSON_VERSION, HIREDIS_MAJOR,
           HIREDIS_MINOR, HIREDIS_PATCH);
    return 0;
}

int main(int argc, char **argv)
{
    const char *given = NULL;
    int nargs = 0;
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    if (args == NULL)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && nargs == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "rxd: --config needs a file\n");
                free(args);
                return 2;
            }
            given = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0 && nargs == 0) {
            given = argv[i] + 9;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            given = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            given = argv[i] + 9;
        } else {
            args[nargs++] = argv[i];
        }
    }
    const char *cmd = nargs > 0 ? args[0] : "help";
    if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "worker") == 0)
        kn_log_fd = STDOUT_FILENO;
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        free(args);
        return cmd_version();
    }

    char err[1024];
    const char *path = config_path(given);
    if (path != NULL) {
        if (kn_config_load(&kn_conf, path, err, sizeof(err)) != 0) {
            fprintf(stderr, "rxd: config: %s\n", err);
            free(args);
            return 2;
        }
    } else {
        kn_conf = kn_config_empty();
    }
    int rc = 0;
    if (kn_settings_load(err, sizeof(err)) != 0) {
        fprintf(stderr, "rxd: %s\n", err);
        rc = 2;
        goto out_conf;
    }
    kn_reg.router = kn_router_new();
    kn_reg.open = true;
    /* The kernel's own readiness: what every module's data depends on. */
    rx_ready_check(NULL, "database", kn_db_ready, NULL);
    rx_ready_check(NULL, "redis", kn_redis_ready, NULL);
    rx_ready_check(NULL, "migrations", kn_migrate_ready, NULL);
    if (kn_builtin_routes() != 0) {
        fprintf(stderr, "rxd: %s\n", kn_reg.error);
        rc = 1;
        goto out_reg;
    }
    size_t nmods;
    char **mods = kn_split_list(kn_config_get(kn_conf, "modules"), &nmods);
    const char *mpath = kn_config_get(kn_conf, "module_path");
    if (mpath == NULL || *mpath == '\0')
        mpath = RXD_DEFAULT_MODULE_PATH;
    rc = kn_modules_load(mods, nmods, mpath, err, sizeof(err));
    kn_strv_free(mods);
    kn_registry_seal();
    if (rc != 0) {
        fprintf(stderr, "rxd: %s\n", err);
        rc = 1;
        goto out_mods;
    }

    if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "worker") == 0) {
        bool migrate = false;
        for (int i = 1; i < nargs; i++) {
            if (strcmp(args[i], "--migrate") == 0) {
                migrate = true;
            } else {
                fprintf(stderr, "rxd %s: unknown option '%s'\n", cmd, args[i]);
                rc = 2;
                goto out_mods;
            }
        }
        /* Never serve a schema older than the code expects. */
        int prc = migrate ? kn_migrate_apply(err, sizeof(err)) : kn_migrate_pending(err, sizeof(err));
        if (prc != 0) {
            fprintf(stderr, "rxd %s: %s\n", cmd, err);
            rc = 1;
            goto out_mods;
        }
        kn_log(RX_LOG_INFO, NULL, "rxd %s starting (config %s)", KN_VERSION,
               path ? path : "none: environment only");
        rc = kn_serve(strcmp(cmd, "serve") == 0);
    } else if (strcmp(cmd, "migrate") == 0) {
        rc = kn_migrate_command(nargs, args);
    } else if (strcmp(cmd, "jobs") == 0) {
        rc = kn_jobs_command(nargs, args);
    } else if (strcmp(cmd, "check") == 0) {
        int warnings = check_keys();
        char *doc = kn_openapi_build(&kn_reg, err, sizeof(err));
        if (doc == NULL) {
            fprintf(stderr, "rxd check: openapi: %s\n", err);
            rc = 1;
        }
        free(doc);
        bool ready = true;
        /* The kernel's own checks (database, Redis) describe running workers;
         * here the database is checked directly, with the migrations. */
        if (kn_db_url() != NULL) {
            int prc = kn_migrate_pending(err, sizeof(err));
            if (prc != 0) {
                fprintf(stderr, "rxd check: %s\n", err);
                ready = false;
            }
        }
        for (size_t i = 0; i < kn_reg.ready.n; i++) {
            if (kn_reg.ready.v[i].module == NULL)
                continue;
            char why[256] = "";
            if (kn_reg.ready.v[i].fn(why, sizeof(why), kn_reg.ready.v[i].data) != 0) {
                fprintf(stderr, "rxd check: not ready: %s: %s\n", kn_reg.ready.v[i].name, why);
                ready = false;
            }
        }
        if (rc == 0 && warnings == 0 && ready) {
            printf("config %s: ok; %zu modules, %zu routes, %d workers, listen %s:%d\n",
                   path ? path : "(environment only)", kn_reg.modules.n, kn_reg.routes.n,
                   kn_set.workers, kn_set.listen_host, kn_set.listen_port);
            for (size_t i = 0; i < kn_reg.modules.n; i++)
                printf("  module %-12s %-8s %s\n", kn_reg.modules.v[i]->desc->name,
                       kn_reg.modules.v[i]->desc->version,
                       kn_reg.modules.v[i]->desc->summary ? kn_reg.modules.v[i]->desc->summary : "");
        } else if (rc == 0) {
            rc = 1;
        }
    } else if (strcmp(cmd, "routes") == 0) {
        rc = cmd_routes();
    } else if (strcmp(cmd, "openapi") == 0) {
        rc = cmd_openapi();
    } else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
    } else {
        kn_command *c = NULL;
        for (size_t i = 0; i < kn_reg.commands.n; i++)
            if (strcmp(kn_reg.commands.v[i].name, cmd) == 0)
                c = &kn_reg.commands.v[i];
        if (c == NULL) {
            fprintf(stderr, "rxd: unknown command '%s'\n\n", cmd);
            usage(stderr);
            rc = 2;
        } else {
            rc = c->fn((rx_module *)c->module, nargs, args);
        }
    }

out_mods:
    kn_modules_stop();
    kn_db_cli_close();
out_reg:
    kn_dispatch_free();
    kn_static_free();
    kn_registry_free();
    kn_redis_free();
    kn_migrate_free();
    kn_jobs_free();
    kn_modules_unload();
out_conf:
    kn_settings_free();
    kn_config_free(kn_conf);
    kn_conf = NULL;
    free(args);
    return rc;
}
