/*
 * cli.c — `rxd createsuperuser`: creates an ACTIVE SUPER_ADMIN. Interactive
 * on a terminal (the password is read without echo, twice), or scripted:
 * --email E [--phone P] [--username U] --password-stdin, or the password in
 * RXD_SUPERUSER_PASSWORD. Runs on the main thread without workers, so it may
 * block: rx_db_run and crypto_pwhash_str directly.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static int read_line(FILE *in, char *buf, size_t len)
{
    if (fgets(buf, (int)len, in) == NULL)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int prompt(const char *q, char *buf, size_t len, bool secret)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (tty == NULL)
        return -1;
    struct termios old, quiet;
    bool restore = false;
    fputs(q, tty);
    fflush(tty);
    if (secret && tcgetattr(fileno(tty), &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0;
    }
    int rc = read_line(tty, buf, len);
    if (restore) {
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
        fputc('\n', tty);
    }
    fclose(tty);
    return rc;
}

int auth_cli_createsuperuser(rx_module *m, int argc, char **argv)
{
    const char *email = NULL, *phone = NULL, *username = NULL;
    bool from_stdin = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--email") == 0 && i + 1 < argc)
            email = argv[++i];
        else if (strcmp(argv[i], "--phone") == 0 && i + 1 < argc)
            phone = argv[++i];
        else if (strcmp(argv[i], "--username") == 0 && i + 1 < argc)
            username = argv[++i];
        else if (strcmp(argv[i], "--password-stdin") == 0)
            from_stdin = true;
        else {
            fprintf(stderr, "usage: rxd createsuperuser [--email E] [--phone P] [--username U]"
                            " [--password-stdin]\n");
            return 2;
        }
    }
    bool interactive = email == NULL && isatty(STDIN_FILENO);
    char ebuf[256] = "", pbuf[256] = "", pw[256] = "", pw2[256] = "", ne[256] = "", np[32] = "";
    if (email == NULL && interactive) {
        if (prompt("Email: ", ebuf, sizeof ebuf, false) != 0)
            return 1;
        email = ebuf;
        if (phone == NULL && prompt("Phone (optional): ", pbuf, sizeof pbuf, false) == 0 && *pbuf)
            phone = pbuf;
    }
    if (email == NULL || ident_norm_email(email, ne, sizeof ne) != 0) {
        fprintf(stderr, "createsuperuser: a valid --email is required\n");
        return 1;
    }
    if (phone != NULL && ident_norm_phone(phone, np, sizeof np) != 0) {
        fprintf(stderr, "createsuperuser: '%s' is not a valid phone number\n", phone);
        return 1;
    }
    const char *envpw = getenv("RXD_SUPERUSER_PASSWORD");
    if (from_stdin) {
        if (read_line(stdin, pw, sizeof pw) != 0) {
            fprintf(stderr, "createsuperuser: no password on standard input\n");
            return 1;
        }
    } else if (envpw != NULL && *envpw) {
        snprintf(pw, sizeof pw, "%s", envpw);
    } else {
        if (prompt("Password: ", pw, sizeof pw, true) != 0 ||
            prompt("Password (again): ", pw2, sizeof pw2, true) != 0) {
            fprintf(stderr, "createsuperuser: no terminal; use --password-stdin or "
                            "RXD_SUPERUSER_PASSWORD\n");
            return 1;
        }
        if (strcmp(pw, pw2) != 0) {
            fprintf(stderr, "createsuperuser: the passwords do not match\n");
            return 1;
        }
    }
    json_t *errs = json_object();
    if (!ident_password_rules(pw, errs, "password")) {
        json_t *l = json_object_get(errs, "password");
        for (size_t i = 0; i < json_array_size(l); i++)
            fprintf(stderr, "createsuperuser: %s\n", json_string_value(json_array_get(l, i)));
        json_decref(errs);
        sodium_memzero(pw, sizeof pw);
        return 1;
    }
    json_decref(errs);
    char hash[crypto_pwhash_STRBYTES];
    int hrc = auth_pw_hash(pw, hash);
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(pw2, sizeof pw2);
    if (hrc != 0) {
        fprintf(stderr, "createsuperuser: out of memory while hashing\n");
        return 1;
    }
    rx_param p[] = {RX_TEXT(username ? username : ne), RX_TEXT(ne), RX_TEXT(np), RX_TEXT(hash)};
    rx_rows *r =
        rx_db_run(m,
                  "INSERT INTO users (username, email, phone, password_hash, role, status,"
                  "                   email_verified, phone_verified)"
                  " VALUES (left($1, 150), $2, $3, $4, 'SUPER_ADMIN', 'ACTIVE', true, $3 <> '')"
                  " RETURNING id",
                  4, p);
    int rc = 0;
    if (rx_rows_failed(r)) {
        const char *st = rx_rows_sqlstate(r);
        if (st != NULL && strcmp(st, "23505") == 0)
            fprintf(stderr,
                    "createsuperuser: a user with this email, phone or username already exists\n");
        else
            fprintf(stderr, "createsuperuser: database error: %s\n",
                    rx_rows_error(r) == RX_EDB ? rx_rows_message(r)
                                               : rx_strerror(rx_rows_error(r)));
        rc = 1;
    } else {
        printf("Superuser created (id %s, %s).\n", rx_rows_text(r, 0, 0), ne);
    }
    rx_rows_free(r);
    return rc;
}
