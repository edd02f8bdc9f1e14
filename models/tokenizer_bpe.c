/* tokenizer_bpe.c - byte-level BPE (tokenizer.ggml.model = "gpt2").
 *
 * Encoding one fragment, as llama.cpp does it:
 *   1. invalid UTF-8 becomes U+FFFD (llama.cpp decodes to code points first);
 *   2. pre-split: the pre-tokenizer's regexes run in sequence, each one over every piece
 *      the previous one produced (a piece is never seen across its edges, so lookaheads
 *      stop there); text a regex does not match stays a piece of its own;
 *   3. each piece's bytes map to GPT-2's printable characters, then adjacent symbols
 *      merge by lowest merge rank (ties: leftmost) until no ranked pair is left;
 *   4. each final symbol is a token; one that is not falls back to single-byte tokens.
 * Strings are interned (tm_strtab) so the merge loop works on integer ids only. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/tokenizer_impl.h"

/* llama.cpp's whitespace set (what its \s matches), spelled out so PCRE2's own idea of
 * \s (which adds U+180E) cannot differ. */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* Letters, numbers and punctuation that Unicode 15.0 and 15.1 added (CJK extensions H
 * and I, Kawi, Nag Mundari, Kaktovik numerals, ...). llama.cpp's tables have them; PCRE2
 * before 10.43 (Unicode 14) calls them unassigned, so the classes name them too. */
#define L15 "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}" \
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}" \
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N15 "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
#define P15 "\\x{11B00}-\\x{11B09}\\x{11F43}-\\x{11F4F}"
#define LETTER "\\p{L}" L15 /* class contents: use inside [...] */
#define NUMBER "\\p{N}" N15

/* GPT-2's split, with \s+ as a final alternative (llama.cpp's implementation of it
 * behaves so; without it a lone space before a non-space would be left unmatched, which
 * the splitter turns into the same piece). */
static const char k_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?[" LETTER "]+| ?[" NUMBER "]+| ?[^" WS LETTER NUMBER "]+"
    "|[" WS "]+(?![^" WS "])|[" WS "]+";
static const char k_re_llama3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n" LETTER NUMBER "]?[" LETTER "]+|[" NUMBER "]{1,3}"
    "| ?[^" WS LETTER NUMBER "]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";
static const char k_re_qwen2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n" LETTER NUMBER "]?[" LETTER "]+|[" NUMBER "]"
    "| ?[^" WS LETTER NUMBER "]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

typedef struct pre_def {
    const char *names[12];             /* tokenizer.ggml.pre values (llama.cpp's aliases) */
    int type;                          /* TM_PRE_* */
    int ignore_merges, add_bos;        /* vocab defaults llama.cpp sets with this pre */
    const char *regex[TM_TOK_MAX_REGEX];
} pre_def;

static const pre_def k_pres[] = {
    {{"default", NULL}, TM_PRE_DEFAULT, 0, 0,
     {"[\\p{P}" P15 "\\$\\+<=>\\^~\\|]+", k_re_gpt2, "[" NUMBER "]+", "[0-9][0-9][0-9]"}},
    {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
      "mellum", "modern-bert", NULL},
     TM_PRE_GPT2, 0, 0, {k_re_gpt2}},
    {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2",
      NULL},
     TM_PRE_SMOLLM, 0, 0, {"[" NUMBER "]", k_re_gpt2}},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
      "jina-v5-nano", NULL},
     TM_PRE_LLAMA3, 1, 1, {k_re_llama3}},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", NULL},
     TM_PRE_QWEN2, 0, 0, {k_re_qwen2}},
};

/* --- GPT-2 byte <-> character map ------------------------------------------------------ */

/* Printable Latin-1 bytes stand for themselves; the other 68 map to U+0100.. in order. */
static void byte_map(uint32_t cp[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* llama.cpp's lenient decoder: checks lead and continuation bit patterns only. Returns the
 * sequence length, or 0 if the bytes at s are not a sequence it accepts. */
static size_t utf8_get(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (need == 0 || need > n) return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (need == 2) *cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
    else if (need == 3) *cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    else *cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return need;
}

size_t tm_bpe_decode_text(const tm_tokenizer *t, const char *s, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0xFFFFFFFF;
        size_t k = utf8_get((const uint8_t *)s + i, len - i, &cp);
        if (k == 0) k = 1;
        if (cp < 324 && t->byte_of_cp[cp] >= 0) {
            out[n++] = (char)t->byte_of_cp[cp];
        } else { /* not a GPT-2 byte character: kept as it is (llama.cpp writes a marker) */
            memcpy(out + n, s + i, k);
            n += k;
        }
        i += k;
    }
    return n;
}

/* --- merges ----------------------------------------------------------------------------- */

static uint64_t pair_key(int32_t l, int32_t r) { return ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1; }

static uint32_t pair_slot(const tm_tokenizer *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & t->merge_mask;
    while (t->merges[i].key != 0 && t->merges[i].key != key) i = (i + 1) & t->merge_mask;
    return i;
}

static int32_t intern(tm_tokenizer *t, const char *s, size_t len) {
    int32_t id = tm_strtab_find(&t->strs, s, len);
    return id >= 0 ? id : tm_strtab_add(&t->strs, s, len);
}

static int load_merges(tm_tokenizer *t, const tm_gguf *g, char *err, size_t err_len) {
    tm_gguf_type et;
    uint64_t n;
    if (tm_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n, NULL) || et != TM_GGUF_STRING)
        return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.merges: missing or not a string array");
    if (n > INT32_MAX / 4) return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.merges: too many");
    uint32_t n_slots = 64;
    while (n_slots < n * 2) n_slots <<= 1;
    t->merges = calloc(n_slots, sizeof(tm_merge_slot));
    if (!t->merges) return TM_ENOMEM;
    t->merge_mask = n_slots - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (tm_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &len)) {
            free(cat);
            return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.merges[%llu] unreadable",
                           (unsigned long long)i);
        }
        /* "left right", split at the first space after the first byte (as llama.cpp) */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) continue;
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        if (ll + rl > cat_cap) {
            cat_cap = (ll + rl) * 2;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                free(cat);
                return TM_ENOMEM;
            }
            cat = c;
        }
        memcpy(cat, s, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t l = intern(t, s, ll), r = intern(t, sp + 1, rl), m = intern(t, cat, ll + rl);
        if (l < 0 || r < 0 || m < 0) {
            free(cat);
            return TM_ENOMEM;
        }
        uint64_t key = pair_key(l, r);
        uint32_t slot = pair_slot(t, key);
        if (t->merges[slot].key == 0) /* the first rank of a repeated pair wins */
            t->merges[slot] = (tm_merge_slot){key, (int32_t)i, m};
    }
    free(cat);
    return 0;
}

/* --- init -------------------------------------------------------------------------------- */

int tm_bpe_init(tm_tokenizer *t, const tm_gguf *g, char *err, size_t err_len) {
    const pre_def *def = NULL;
    for (size_t i = 0; i < TM_ARRAY_LEN(k_pres) && !def; i++)
        for (const char *const *n = k_pres[i].names; *n && !def; n++)
            if (strcmp(*n, t->pre_name) == 0) def = &k_pres[i];
    if (!def)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "unknown pre-tokenizer '%s' (tokenizer.ggml.pre)",
                       t->pre_name);
    t->pre_type = def->type;
    t->ignore_merges = def->ignore_merges;
    t->add_bos = def->add_bos;
    for (int i = 0; i < TM_TOK_MAX_REGEX && def->regex[i]; i++) {
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)def->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof(msg));
            return tm_fail(err, err_len, TM_EUNSUPPORTED, "pre-tokenizer '%s': regex %d: %s at %zu",
                           t->pre_name, i, (const char *)msg, (size_t)off);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
        t->regex[t->n_regex++] = re;
    }
    int rc = load_merges(t, g, err, err_len);
    if (rc) return rc;
    uint32_t cp[256];
    byte_map(cp);
    for (int i = 0; i < 324; i++) t->byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) {
        t->byte_of_cp[cp[b]] = (int16_t)b;
        t->byte_chr_len[b] = (uint8_t)utf8_put(cp[b], t->byte_chr[b]);
        t->byte_sym[b] = tm_strtab_find(&t->strs, t->byte_chr[b], t->byte_chr_len[b]);
    }
    return 0;
}

void tm_bpe_deinit(tm_tokenizer *t) {
    for (int i = 0; i < t->n_regex; i++) pcre2_code_free((pcre2_code *)t->regex[i]);
    t->n_regex = 0;
    free(t->merges);
    t->merges = NULL;
}

/* --- encode -------------------------------------------------------------------------------- */

typedef struct bigram {
    int32_t rank;        /* merge rank (lower first) */
    int32_t left, right; /* symbol indices */
    int32_t idl, idr;    /* their ids when queued; stale if either changed */
} bigram;

/* Per-call scratch, grown as needed. */
typedef struct bpe_work {
    int32_t *id, *prev, *next; /* (cap) symbols of the current word */
    int cap;
    bigram *heap;              /* (heap_cap) min-heap on (rank, left) */
    int n_heap, heap_cap;
    uint32_t *chunks;          /* (chunk_cap) pairs (offset, length) */
    int n_chunks, chunk_cap;
    uint32_t *chunks2;         /* (chunk_cap2) next regex's output */
    int n_chunks2, chunk_cap2;
    char *text;                /* (text_cap) a word mapped to GPT-2 characters */
    size_t text_cap;
} bpe_work;

static void work_free(bpe_work *w) {
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->heap);
    free(w->chunks);
    free(w->chunks2);
    free(w->text);
}

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return TM_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int bigram_less(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(bpe_work *w, bigram b) {
    if (grow((void **)&w->heap, &w->heap_cap, w->n_heap + 1, sizeof(bigram))) return TM_ENOMEM;
    int i = w->n_heap++;
    while (i > 0 && bigram_less(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
    return 0;
}

static bigram heap_pop(bpe_work *w) {
    bigram top = w->heap[0], last = w->heap[--w->n_heap];
    int i = 0, n = w->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static int try_pair(const tm_tokenizer *t, bpe_work *w, int l, int r) {
    if (l < 0 || r < 0 || w->id[l] < 0 || w->id[r] < 0) return 0;
    const tm_merge_slot *m = &t->merges[pair_slot(t, pair_key(w->id[l], w->id[r]))];
    if (m->key == 0) return 0;
    return heap_push(w, (bigram){m->rank, l, r, w->id[l], w->id[r]});
}

/* Emits the tokens of symbol text s that is not itself a token: one per byte that is a
 * single-byte token (llama.cpp's fallback; other bytes are dropped). */
static int emit_fallback(const tm_tokenizer *t, const char *s, size_t len, tm_ids *out) {
    for (size_t i = 0; i < len; i++) {
        int32_t id = tm_strtab_find(&t->strs, s + i, 1);
        if (id >= 0 && id < t->n_vocab && tm_ids_push(out, id)) return TM_ENOMEM;
    }
    return 0;
}

/* BPE over one pre-split word (raw bytes). */
static int encode_word(const tm_tokenizer *t, bpe_work *w, const uint8_t *s, int n, tm_ids *out) {
    if (t->ignore_merges || n == 1) { /* the whole word may be a token */
        size_t mlen = 0;
        if (w->text_cap < (size_t)n * 2) {
            char *p = realloc(w->text, (size_t)n * 2);
            if (!p) return TM_ENOMEM;
            w->text = p;
            w->text_cap = (size_t)n * 2;
        }
        for (int i = 0; i < n; i++) {
            memcpy(w->text + mlen, t->byte_chr[s[i]], t->byte_chr_len[s[i]]);
            mlen += t->byte_chr_len[s[i]];
        }
        int32_t id = tm_strtab_find(&t->strs, w->text, mlen);
        if (id >= 0 && id < t->n_vocab) return tm_ids_push(out, id);
        if (n == 1) return emit_fallback(t, w->text, mlen, out);
    }
    if (grow((void **)&w->id, &w->cap, n, sizeof(int32_t))) return TM_ENOMEM;
    int cap = w->cap;
    int32_t *p = realloc(w->prev, sizeof(int32_t) * cap), *q;
    if (!p) return TM_ENOMEM;
    w->prev = p;
    if (!(q = realloc(w->next, sizeof(int32_t) * cap))) return TM_ENOMEM;
    w->next = q;
    for (int i = 0; i < n; i++) {
        w->id[i] = t->byte_sym[s[i]];
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < n ? i + 1 : -1;
    }
    w->n_heap = 0;
    for (int i = 1; i < n; i++)
        if (try_pair(t, w, i - 1, i)) return TM_ENOMEM;
    while (w->n_heap > 0) {
        bigram b = heap_pop(w);
        if (w->id[b.left] != b.idl || w->id[b.right] != b.idr || w->next[b.left] != b.right)
            continue; /* a symbol changed since this pair was queued */
        const tm_merge_slot *m = &t->merges[pair_slot(t, pair_key(b.idl, b.idr))];
        w->id[b.left] = m->merged;
        w->id[b.right] = -2; /* merged away */
        w->next[b.left] = w->next[b.right];
        if (w->next[b.right] >= 0) w->prev[w->next[b.right]] = b.left;
        if (try_pair(t, w, w->prev[b.left], b.left) || try_pair(t, w, b.left, w->next[b.left]))
            return TM_ENOMEM;
    }
    for (int i = 0; i >= 0; i = w->next[i]) {
        int32_t id = w->id[i];
        if (id >= 0 && id < t->n_vocab) {
            if (tm_ids_push(out, id)) return TM_ENOMEM;
        } else if (id >= t->n_vocab) {
            size_t len;
            const char *str = tm_strtab_str(&t->strs, id, &len);
            if (emit_fallback(t, str, len, out)) return TM_ENOMEM;
        } else {
            if (emit_fallback(t, t->byte_chr[s[i]], t->byte_chr_len[s[i]], out)) return TM_ENOMEM;
        }
    }
    return 0;
}

/* Strictly valid UTF-8? (Then llama.cpp's decode/re-encode leaves it unchanged.) */
static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = tm_utf8_char_len(s + i, n - i))) return 0;
    return 1;
}

/* llama.cpp's view of invalid input: each byte it cannot decode becomes U+FFFD, and
 * what it decodes (overlong forms, surrogates) is re-encoded. *out is malloc'd, with
 * *split a copy for the regexes (same length) unless it is *out: PCRE2 cannot match a
 * surrogate, so there it reads U+E000, which like a surrogate for llama.cpp is neither
 * letter, number, space nor punctuation. *out stays NULL for valid text. */
static int sanitize(const char *text, size_t len, char **out, char **split, size_t *out_len) {
    *out = *split = NULL;
    if (utf8_valid((const uint8_t *)text, len)) return 0;
    char *s = malloc(len * 3), *r = NULL;
    if (!s) return TM_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_get((const uint8_t *)text + i, len - i, &cp);
        if (k == 0 || cp > 0x10FFFF) k = k ? k : 1, cp = 0xFFFD;
        if (cp >= 0xD800 && cp <= 0xDFFF && !r) {
            if (!(r = malloc(len * 3))) {
                free(s);
                return TM_ENOMEM;
            }
            memcpy(r, s, n);
        }
        if (r) utf8_put(cp >= 0xD800 && cp <= 0xDFFF ? 0xE000 : cp, r + n);
        n += utf8_put(cp, s + n);
        i += k;
    }
    *out = s;
    *split = r ? r : s;
    *out_len = n;
    return 0;
}

static int push_chunk(uint32_t **v, int *n, int *cap, uint32_t off, uint32_t len) {
    if (grow((void **)v, cap, 2 * (*n + 1), sizeof(uint32_t))) return TM_ENOMEM;
    (*v)[2 * *n] = off;
    (*v)[2 * *n + 1] = len;
    (*n)++;
    return 0;
}

/* Runs the pre-tokenizer regexes; leaves the pieces in w->chunks. */
static int pre_split(const tm_tokenizer *t, bpe_work *w, const char *text, size_t len,
                     pcre2_match_data *md) {
    w->n_chunks = 0;
    if (push_chunk(&w->chunks, &w->n_chunks, &w->chunk_cap, 0, (uint32_t)len)) return TM_ENOMEM;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (int r = 0; r < t->n_regex; r++) {
        const pcre2_code *re = t->regex[r];
        w->n_chunks2 = 0;
        for (int c = 0; c < w->n_chunks; c++) {
            uint32_t off = w->chunks[2 * c], clen = w->chunks[2 * c + 1];
            PCRE2_SPTR subj = (PCRE2_SPTR)text + off;
            size_t pos = 0;
            while (pos < clen) {
                int rc = pcre2_match(re, subj, clen, pos, 0, md, NULL);
                if (rc < 0) break;
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* our patterns never match empty; never loop on one */
                    break;
                }
                if (ms > pos && push_chunk(&w->chunks2, &w->n_chunks2, &w->chunk_cap2,
                                           off + (uint32_t)pos, (uint32_t)(ms - pos)))
                    return TM_ENOMEM;
                if (push_chunk(&w->chunks2, &w->n_chunks2, &w->chunk_cap2, off + (uint32_t)ms,
                               (uint32_t)(me - ms)))
                    return TM_ENOMEM;
                pos = me;
            }
            if (pos < clen && push_chunk(&w->chunks2, &w->n_chunks2, &w->chunk_cap2,
                                         off + (uint32_t)pos, (uint32_t)(clen - pos)))
                return TM_ENOMEM;
        }
        uint32_t *tv = w->chunks;
        int tc = w->chunk_cap;
        w->chunks = w->chunks2, w->chunk_cap = w->chunk_cap2, w->n_chunks = w->n_chunks2;
        w->chunks2 = tv, w->chunk_cap2 = tc;
    }
    return 0;
}

int tm_bpe_encode(const tm_tokenizer *t, const char *text, size_t len, tm_ids *out) {
    if (len == 0) return 0;
    if (len > UINT32_MAX / 4) return TM_ERANGE;
    bpe_work w = {0};
    int rc = TM_ENOMEM;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return TM_ENOMEM;
    char *own, *split;
    size_t n = len;
    if ((rc = sanitize(text, len, &own, &split, &n))) goto done;
    const char *s = own ? own : text;
    rc = pre_split(t, &w, split ? split : text, n, md);
    for (int c = 0; rc == 0 && c < w.n_chunks; c++)
        rc = encode_word(t, &w, (const uint8_t *)s + w.chunks[2 * c], (int)w.chunks[2 * c + 1], out);
    if (split != own) free(split);
    free(own);
done:
    pcre2_match_data_free(md);
    work_free(&w);
    return rc;
}
