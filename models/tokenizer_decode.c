/* tokenizer_decode.c - token ids back to text: pieces, whole-sequence decode and the
 * incremental detokenizer that only ever emits complete UTF-8 characters. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/tokenizer.h"
#include "models/tokenizer_impl.h"

/* --- decoding ------------------------------------------------------------------------- */

const char *tm_tokenizer_piece(const tm_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->pieces + t->piece_off[id];
}

int tm_tokenizer_decode(const tm_tokenizer *t, const int32_t *ids, int n_ids, char **text,
                        size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        size_t n;
        tm_tokenizer_piece(t, ids[i], &n);
        total += n;
    }
    char *s = malloc(total + 1);
    if (!s) return TM_ENOMEM;
    size_t pos = 0;
    int first = 1;
    for (int i = 0; i < n_ids; i++) {
        size_t n;
        const char *p = tm_tokenizer_piece(t, ids[i], &n);
        if (first && tm_strip_first_space(t, ids[i], p, n)) p++, n--;
        if (!(first && ids[i] == t->bos)) first = 0;
        memcpy(s + pos, p, n);
        pos += n;
    }
    s[pos] = '\0';
    *text = s;
    if (len) *len = pos;
    return 0;
}

/* --- incremental detokenizer ------------------------------------------------------------ */

void tm_detok_init(tm_detok *d) { memset(d, 0, sizeof(*d)); }

typedef struct outbuf {
    char *p;
    size_t cap, n;
} outbuf;

static void put(outbuf *o, const void *s, size_t n) {
    if (o->n + n > o->cap) return; /* cap too small: drop rather than overflow */
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void put_replacements(outbuf *o, int n) {
    for (int i = 0; i < n; i++) put(o, "\xef\xbf\xbd", 3);
}

static void detok_byte(tm_detok *d, uint8_t c, outbuf *o) {
    for (;;) {
        if (d->n_pending == 0) {
            uint8_t lo, hi;
            if (c < 0x80) {
                put(o, &c, 1);
            } else if (tm_utf8_need(c, &lo, &hi)) {
                d->pending[d->n_pending++] = c;
            } else {
                put_replacements(o, 1);
            }
            return;
        }
        uint8_t lo, hi;
        int need = tm_utf8_need(d->pending[0], &lo, &hi);
        if (d->n_pending > 1) lo = 0x80, hi = 0xBF;
        if (c >= lo && c <= hi) {
            d->pending[d->n_pending++] = c;
            if (d->n_pending == need) {
                put(o, d->pending, (size_t)need);
                d->n_pending = 0;
            }
            return;
        }
        /* The pending sequence can never complete: replace it, then retry c afresh. */
        put_replacements(o, d->n_pending);
        d->n_pending = 0;
    }
}

size_t tm_detok_push(tm_detok *d, const tm_tokenizer *t, int32_t id, char *out, size_t cap) {
    outbuf o = {out, cap, 0};
    size_t n;
    const char *p = tm_tokenizer_piece(t, id, &n);
    if (d->n_tokens == 0 && tm_strip_first_space(t, id, p, n)) p++, n--;
    if (!(d->n_tokens == 0 && id == t->bos)) d->n_tokens++;
    for (size_t i = 0; i < n; i++) detok_byte(d, (uint8_t)p[i], &o);
    return o.n;
}

size_t tm_detok_flush(tm_detok *d, char *out, size_t cap) {
    outbuf o = {out, cap, 0};
    put_replacements(&o, d->n_pending);
    d->n_pending = 0;
    return o.n;
}
