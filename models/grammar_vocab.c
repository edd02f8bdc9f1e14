/* grammar_vocab.c - the vocabulary preprocessed once per tokenizer: every text token's
 * bytes, sorted, with the prefix each shares with the one before (a trie flattened into
 * a list: walking it in order simulates each shared prefix once). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

typedef struct keyed {
    const uint8_t *p; /* piece bytes */
    int32_t len;      /* length */
    int32_t id;       /* token */
} keyed;

static int cmp_keyed(const void *x, const void *y) {
    const keyed *a = x, *b = y;
    int32_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p, b->p, (size_t)n);
    if (c) return c;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id; /* duplicates in id order: deterministic */
}

int tm_grammar_vocab_create_pieces(int32_t n, const char *const *pieces, const size_t *lens,
                                   const uint8_t *is_text, const int32_t *eog, int32_t n_eog,
                                   int strip_first_space, tm_grammar_vocab **out, char *err,
                                   size_t err_len) {
    *out = NULL;
    tm_grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    atomic_init(&v->refs, 1);
    v->n_vocab = n;
    v->strip_first_space = strip_first_space;
    size_t total = 0;
    for (int32_t id = 0; id < n; id++) total += lens[id];
    v->bytes = malloc(total + 1);
    v->off = malloc(((size_t)n + 1) * sizeof *v->off);
    v->text_mask = calloc(tm_grammar_mask_words(n), sizeof *v->text_mask);
    keyed *keys = malloc(((size_t)n + 1) * sizeof *keys);
    v->eog = malloc(((size_t)n_eog + 1) * sizeof *v->eog);
    uint8_t *end = calloc((size_t)n + 1, 1);
    if (!v->bytes || !v->off || !v->text_mask || !keys || !v->eog || !end || total > UINT32_MAX) {
        free(keys);
        free(end);
        tm_grammar_vocab_destroy(v);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory for the grammar vocabulary");
    }
    for (int32_t i = 0; i < n_eog; i++)
        if (eog[i] >= 0 && eog[i] < n && !end[eog[i]]) end[eog[i]] = 1, v->eog[v->n_eog++] = eog[i];
    size_t pos = 0;
    int32_t n_text = 0;
    for (int32_t id = 0; id < n; id++) {
        size_t len = lens[id];
        v->off[id] = (uint32_t)pos;
        if (len) memcpy(v->bytes + pos, pieces[id], len);
        if (!end[id] && len > 0 && len <= UINT16_MAX && is_text[id]) {
            keys[n_text++] = (keyed){(const uint8_t *)v->bytes + pos, (int32_t)len, id};
            v->text_mask[id >> 5] |= 1u << (id & 31);
            if ((int32_t)len > v->max_len) v->max_len = (int32_t)len;
        }
        pos += len;
    }
    v->off[n] = (uint32_t)pos;
    free(end);
    qsort(keys, (size_t)n_text, sizeof *keys, cmp_keyed);
    v->sorted = malloc(((size_t)n_text + 1) * sizeof *v->sorted);
    v->lcp = malloc(((size_t)n_text + 1) * sizeof *v->lcp);
    if (!v->sorted || !v->lcp) {
        free(keys);
        tm_grammar_vocab_destroy(v);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory for the grammar vocabulary");
    }
    v->n_text = n_text;
    size_t text_bytes = 0;
    for (int32_t i = 0; i < n_text; i++) text_bytes += (size_t)keys[i].len;
    v->sorted_bytes = malloc(text_bytes + 1);
    v->sorted_off = malloc(((size_t)n_text + 1) * sizeof *v->sorted_off);
    if (!v->sorted_bytes || !v->sorted_off) {
        free(keys);
        tm_grammar_vocab_destroy(v);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory for the grammar vocabulary");
    }
    size_t at = 0;
    for (int32_t i = 0; i < n_text; i++) {
        v->sorted_off[i] = (uint32_t)at;
        memcpy(v->sorted_bytes + at, keys[i].p, (size_t)keys[i].len);
        at += (size_t)keys[i].len;
    }
    v->sorted_off[n_text] = (uint32_t)at;
    for (int b = 0; b <= 256; b++) v->first_lo[b] = n_text;
    for (int32_t i = n_text - 1; i >= 0; i--) v->first_lo[keys[i].p[0]] = i;
    for (int b = 255; b >= 0; b--) /* empty buckets start where the next one does */
        if (v->first_lo[b] > v->first_lo[b + 1]) v->first_lo[b] = v->first_lo[b + 1];
    for (int32_t i = 0; i < n_text; i++) {
        v->sorted[i] = keys[i].id;
        int32_t l = 0;
        if (i > 0) {
            int32_t m = keys[i].len < keys[i - 1].len ? keys[i].len : keys[i - 1].len;
            while (l < m && keys[i].p[l] == keys[i - 1].p[l]) l++;
        }
        v->lcp[i] = (uint16_t)l;
    }
    free(keys);
    *out = v;
    return 0;
}

int tm_grammar_vocab_create(const tm_tokenizer *tok, tm_grammar_vocab **out, char *err,
                            size_t err_len) {
    int32_t n = tm_tokenizer_n_vocab(tok), n_eog = 0;
    const char **pieces = malloc(((size_t)n + 1) * sizeof *pieces);
    size_t *lens = malloc(((size_t)n + 1) * sizeof *lens);
    uint8_t *is_text = malloc((size_t)n + 1);
    int32_t *eog = malloc(((size_t)n + 1) * sizeof *eog);
    int rc;
    if (!pieces || !lens || !is_text || !eog) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory for the grammar vocabulary");
    } else {
        for (int32_t id = 0; id < n; id++) {
            pieces[id] = tm_tokenizer_piece(tok, id, &lens[id]);
            is_text[id] = (uint8_t)tm_tokenizer_is_text(tok, id);
            if (tm_tokenizer_is_eog(tok, id)) eog[n_eog++] = id;
        }
        rc = tm_grammar_vocab_create_pieces(n, pieces, lens, is_text, eog, n_eog,
                                            tm_tokenizer_strips_first_space(tok), out, err, err_len);
    }
    free(pieces);
    free(lens);
    free(is_text);
    free(eog);
    return rc;
}

tm_grammar_vocab *tm_grammar_vocab_retain(tm_grammar_vocab *v) {
    atomic_fetch_add(&v->refs, 1);
    return v;
}

void tm_grammar_vocab_destroy(tm_grammar_vocab *v) {
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1) return;
    free(v->bytes);
    free(v->off);
    free(v->sorted);
    free(v->sorted_bytes);
    free(v->sorted_off);
    free(v->lcp);
    free(v->text_mask);
    free(v->eog);
    free(v);
}

int tm_grammar_vocab_n_vocab(const tm_grammar_vocab *v) { return v->n_vocab; }
