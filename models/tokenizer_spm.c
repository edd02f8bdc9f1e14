/* tokenizer_spm.c - SentencePiece-style vocab (tokenizer.ggml.model = "llama").
 *
 * As llama.cpp's SPM tokenizer: spaces become U+2581 (plus one in front of a fragment
 * when add_space_prefix asks), the text starts as one symbol per UTF-8 character, and
 * the adjacent pair whose concatenation is the highest-scoring vocab token merges first
 * (ties: leftmost) until no pair is a token. A final symbol that is not a token falls
 * back to byte tokens <0xXX>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/tokenizer_impl.h"

int tm_spm_init(tm_tokenizer *t, char *err, size_t err_len) {
    (void)err, (void)err_len;
    for (int b = 0; b < 256; b++) {
        char hex[8];
        int n = snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = tm_strtab_find(&t->strs, hex, (size_t)n);
        if (id < 0) { /* llama.cpp then tries the byte itself as a token */
            char c = (char)b;
            id = tm_strtab_find(&t->strs, &c, 1);
        }
        t->byte_tok[b] = id >= 0 && id < t->n_vocab ? id : -1;
    }
    return 0;
}

typedef struct spm_bigram {
    float score;         /* score of the merged token (higher first) */
    int32_t left, right; /* symbol indices */
    uint32_t size;       /* bytes of left + right when queued; stale if it changed */
} spm_bigram;

typedef struct spm_work {
    uint32_t *start, *n;  /* (n_sym) byte span of each symbol in the text */
    int32_t *prev, *next; /* (n_sym) neighbours, -1 at the ends */
    spm_bigram *heap;     /* (heap_cap) max-heap on (score, -left) */
    int n_heap, heap_cap;
} spm_work;

static int spm_before(const spm_bigram *a, const spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int spm_push(spm_work *w, spm_bigram b) {
    if (w->n_heap == w->heap_cap) {
        int cap = w->heap_cap ? w->heap_cap * 2 : 64;
        spm_bigram *h = realloc(w->heap, sizeof(*h) * cap);
        if (!h) return TM_ENOMEM;
        w->heap = h;
        w->heap_cap = cap;
    }
    int i = w->n_heap++;
    while (i > 0 && spm_before(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
    return 0;
}

static spm_bigram spm_pop(spm_work *w) {
    spm_bigram top = w->heap[0], last = w->heap[--w->n_heap];
    int i = 0, n = w->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!spm_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static int spm_try(const tm_tokenizer *t, spm_work *w, const char *s, int l, int r) {
    if (l < 0 || r < 0) return 0;
    uint32_t size = w->n[l] + w->n[r]; /* l and r are adjacent: their bytes are contiguous */
    int32_t id = tm_strtab_find(&t->strs, s + w->start[l], size);
    if (id < 0 || id >= t->n_vocab) return 0;
    return spm_push(w, (spm_bigram){t->scores[id], l, r, size});
}

int tm_spm_encode(const tm_tokenizer *t, const char *text, size_t len, int prefix_space,
                  tm_ids *out) {
    if (len > UINT32_MAX / 4) return TM_ERANGE;
    /* Escape whitespace: ' ' -> U+2581, at most 3x the bytes. */
    char *s = malloc(len * 3 + 4);
    spm_work w = {0};
    int rc = TM_ENOMEM;
    if (!s) return TM_ENOMEM;
    size_t n = 0;
    if (prefix_space) memcpy(s, "\xe2\x96\x81", 3), n = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(s + n, "\xe2\x96\x81", 3), n += 3;
        else s[n++] = text[i];
    }
    if (n == 0) {
        free(s);
        return 0;
    }
    w.start = malloc(sizeof(uint32_t) * n);
    w.n = malloc(sizeof(uint32_t) * n);
    w.prev = malloc(sizeof(int32_t) * n);
    w.next = malloc(sizeof(int32_t) * n);
    if (!w.start || !w.n || !w.prev || !w.next) goto done;

    int n_sym = 0;
    for (size_t off = 0; off < n;) { /* one symbol per UTF-8 character, as llama.cpp splits */
        size_t k = tm_utf8_len((uint8_t)s[off]);
        if (k > n - off) k = n - off;
        w.start[n_sym] = (uint32_t)off;
        w.n[n_sym] = (uint32_t)k;
        w.prev[n_sym] = n_sym - 1;
        off += k;
        w.next[n_sym] = off == n ? -1 : n_sym + 1;
        n_sym++;
    }
    for (int i = 1; i < n_sym; i++)
        if (spm_try(t, &w, s, i - 1, i)) goto done;
    while (w.n_heap > 0) {
        spm_bigram b = spm_pop(&w);
        uint32_t *nl = &w.n[b.left], *nr = &w.n[b.right];
        if (*nl == 0 || *nr == 0 || *nl + *nr != b.size) continue; /* stale */
        *nl += *nr;
        *nr = 0;
        w.next[b.left] = w.next[b.right];
        if (w.next[b.right] >= 0) w.prev[w.next[b.right]] = b.left;
        if (spm_try(t, &w, s, w.prev[b.left], b.left) || spm_try(t, &w, s, b.left, w.next[b.left]))
            goto done;
    }
    for (int i = 0; i >= 0; i = w.next[i]) {
        int32_t id = tm_strtab_find(&t->strs, s + w.start[i], w.n[i]);
        if (id >= 0 && id < t->n_vocab) {
            if (tm_ids_push(out, id)) goto done;
            continue;
        }
        for (uint32_t j = 0; j < w.n[i]; j++) {
            int32_t b = t->byte_tok[(uint8_t)s[w.start[i] + j]];
            if (b < 0) b = t->unk; /* llama.cpp would fail here; unk is the kinder answer */
            if (b >= 0 && tm_ids_push(out, b)) goto done;
        }
    }
    rc = 0;
done:
    free(s);
    free(w.start);
    free(w.n);
    free(w.prev);
    free(w.next);
    free(w.heap);
    return rc;
}
