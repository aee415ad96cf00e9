/*
 * drf.c — see drf.h.
 */
#include "drf.h"

#include <stdio.h>
#include <stdlib.h>

const char *drf_scalar_text(const json_t *v, char *num, size_t numsz)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(num, numsz, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return num;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(num, numsz, "%.*g", prec, d);
            if (strtod(num, NULL) == d)
                break;
        }
        return num;
    }
    return NULL;
}
