/*
 * drf.h — how Django REST Framework reads a JSON scalar, for the modules that
 * validate fields as the old DRF serializers did (inventory, orders): one
 * definition compiled into each (modules cannot call each other's code).
 */
#ifndef RX_MODULES_DRF_H
#define RX_MODULES_DRF_H

#include <jansson.h>
#include <stddef.h>

/* The text a CharField or DecimalField validates for `v`: a string as it is
 * (borrowed from v), an integer in decimal, a real as Python's str() writes
 * it (the shortest text that reads back the same), both written into num.
 * NULL for anything else (null, bool, list, object): the caller says which
 * message that is. */
const char *drf_scalar_text(const json_t *v, char *num, size_t numsz);

#endif
