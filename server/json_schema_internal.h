/* json_schema_internal.h - private to server/json_schema*.c: the numeric part of the
 * JSON Schema front end. Not a public header. */
#ifndef TM_JSON_SCHEMA_INTERNAL_H
#define TM_JSON_SCHEMA_INTERNAL_H

#include <stdint.h>

#include "server/gbnf_text.h"

/* A parenthesized GBNF expression for the decimal integers in [lo, hi]; an end whose
 * has_* is 0 is open. Matches nothing ("") when the range is empty. */
void tm_schema_int_range(tm_gtext *out, int64_t lo, int has_lo, int64_t hi, int has_hi);
/* A parenthesized GBNF expression for JSON numbers inside the bounds (a subset, see
 * json_schema_num.c). TM_EINVAL when the bounds leave no number. */
int tm_schema_num_range(tm_gtext *out, double lo, int lo_set, int lo_excl, double hi, int hi_set,
                        int hi_excl);

#endif
