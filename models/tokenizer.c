/* tokenizer.c - vocab loading from GGUF metadata, special-token handling and encode
 * dispatch (decoding is in tokenizer_decode.c).
 *
 * The rules follow llama.cpp (src/llama-vocab.cpp) so that ids match it exactly:
 *   - special tokens (control, user-defined, unknown) are cut out of the text first,
 *     longest token text first over the whole text, then shorter ones in what is left;
 *     without parse_special only user-defined tokens are cut out;
 *   - the end-of-generation set and some attributes come from token names as well as
 *     metadata (llama.cpp's "auto-detect" lists);
 *   - the rest of each fragment goes to byte-level BPE (tokenizer_bpe.c) or
 *     SentencePiece-style merging (tokenizer_spm.c).
 * Pieces (the bytes each token decodes to) are computed once at load. Decoding does
 * not apply llama.cpp's optional "clean spaces" rewriting, so decode(encode(s)) == s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/common.h"
#include "models/tokenizer.h"
#include "models/tokenizer_impl.h"

/* --- interned strings ------------------------------------------------------------- */

static uint32_t str_hash(const char *s, size_t len) { return (uint32_t)XXH3_64bits(s, len); }

int tm_strtab_init(tm_strtab *t, int32_t cap_hint) {
    memset(t, 0, sizeof(*t));
    t->cap = cap_hint > 16 ? cap_hint : 16;
    t->pool_cap = (size_t)t->cap * 8;
    uint32_t n_slots = 64;
    while (n_slots < (uint32_t)t->cap * 2) n_slots <<= 1;
    t->mask = n_slots - 1;
    t->off = malloc(sizeof(uint32_t) * t->cap);
    t->len = malloc(sizeof(uint32_t) * t->cap);
    t->pool = malloc(t->pool_cap);
    t->slots = malloc(sizeof(int32_t) * n_slots);
    if (!t->off || !t->len || !t->pool || !t->slots) {
        tm_strtab_deinit(t);
        return TM_ENOMEM;
    }
    memset(t->slots, 0xff, sizeof(int32_t) * n_slots);
    return 0;
}

void tm_strtab_deinit(tm_strtab *t) {
    free(t->off);
    free(t->len);
    free(t->pool);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* Slot holding s, or the empty slot where it would go. */
static uint32_t strtab_slot(const tm_strtab *t, const char *s, size_t len) {
    uint32_t i = str_hash(s, len) & t->mask;
    for (;; i = (i + 1) & t->mask) {
        int32_t e = t->slots[i];
        if (e < 0) return i;
        if (t->len[e] == len && memcmp(t->pool + t->off[e], s, len) == 0) return i;
    }
}

static int strtab_rehash(tm_strtab *t) {
    uint32_t n_slots = (t->mask + 1) * 2;
    int32_t *slots = malloc(sizeof(int32_t) * n_slots);
    if (!slots) return TM_ENOMEM;
    memset(slots, 0xff, sizeof(int32_t) * n_slots);
    free(t->slots);
    t->slots = slots;
    t->mask = n_slots - 1;
    for (int32_t e = 0; e < t->n; e++) {
        uint32_t i = strtab_slot(t, t->pool + t->off[e], t->len[e]);
        t->slots[i] = e; /* later duplicates overwrite: find gives the last one */
    }
    return 0;
}

int32_t tm_strtab_add(tm_strtab *t, const char *s, size_t len) {
    if (len > UINT32_MAX / 2) return TM_EINVAL;
    if (t->n == t->cap) {
        int32_t cap = t->cap * 2;
        uint32_t *off = realloc(t->off, sizeof(uint32_t) * cap);
        if (!off) return TM_ENOMEM;
        t->off = off;
        uint32_t *ln = realloc(t->len, sizeof(uint32_t) * cap);
        if (!ln) return TM_ENOMEM;
        t->len = ln;
        t->cap = cap;
    }
    if (t->pool_len + len + 1 > t->pool_cap) {
        size_t cap = t->pool_cap * 2;
        while (cap < t->pool_len + len + 1) cap *= 2;
        if (cap > UINT32_MAX) return TM_ENOMEM; /* offsets are 32-bit */
        char *pool = realloc(t->pool, cap);
        if (!pool) return TM_ENOMEM;
        t->pool = pool;
        t->pool_cap = cap;
    }
    int32_t e = t->n++;
    t->off[e] = (uint32_t)t->pool_len;
    t->len[e] = (uint32_t)len;
    memcpy(t->pool + t->pool_len, s, len);
    t->pool[t->pool_len + len] = '\0';
    t->pool_len += len + 1;
    if ((uint32_t)t->n * 2 > t->mask + 1) {
        if (strtab_rehash(t)) return TM_ENOMEM;
    } else {
        t->slots[strtab_slot(t, s, len)] = e;
    }
    return e;
}

int32_t tm_strtab_find(const tm_strtab *t, const char *s, size_t len) {
    return t->slots[strtab_slot(t, s, len)];
}

int tm_ids_push(tm_ids *b, int32_t id) {
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        int32_t *v = realloc(b->v, sizeof(int32_t) * cap);
        if (!v) return TM_ENOMEM;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return 0;
}

/* --- metadata helpers -------------------------------------------------------------- */

static int32_t find_text(const tm_tokenizer *t, const char *s) {
    int32_t id = tm_strtab_find(&t->strs, s, strlen(s));
    return id < t->n_vocab ? id : -1;
}

static int in_list(const char *s, size_t len, const char *const *list) {
    /* Every listed name starts with one of these bytes (0xE2: U+2581, U+FF5C) and is
     * short; most of a 262k vocab is rejected here without comparing names. */
    if (len == 0 || len > 32 || !memchr("<_[\xe2", s[0], 4)) return 0;
    for (; *list; list++)
        if (strlen(*list) == len && memcmp(*list, s, len) == 0) return 1;
    return 0;
}

/* Reads a numeric array element as int32 / float (GGUF arrays are packed, maybe unaligned). */
static int32_t arr_i32(const void *data, uint64_t i) {
    int32_t v;
    memcpy(&v, (const char *)data + i * 4, 4);
    return v;
}
static float arr_f32(const void *data, uint64_t i) {
    float v;
    memcpy(&v, (const char *)data + i * 4, 4);
    return v;
}

static int load_tokens(tm_tokenizer *t, const tm_gguf *g, char *err, size_t err_len) {
    tm_gguf_type et;
    uint64_t n;
    if (tm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL) || et != TM_GGUF_STRING)
        return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.tokens: missing or not a string array");
    if (n == 0 || n > INT32_MAX / 4)
        return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.tokens: bad count %llu",
                       (unsigned long long)n);
    t->n_vocab = (int32_t)n;
    if (tm_strtab_init(&t->strs, t->n_vocab + 1024)) return TM_ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s;
        size_t len;
        char empty[32];
        if (tm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, &len))
            return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.tokens[%d] unreadable", i);
        if (len == 0) { /* llama.cpp renames empty tokens so they stay distinct */
            len = (size_t)snprintf(empty, sizeof(empty), "[EMPTY_%d]", i);
            s = empty;
        }
        if (tm_strtab_add(&t->strs, s, len) < 0) return TM_ENOMEM;
    }

    t->scores = calloc((size_t)t->n_vocab, sizeof(float));
    t->attr = malloc((size_t)t->n_vocab);
    t->eog = calloc((size_t)t->n_vocab, 1);
    t->special_rank = malloc(sizeof(int32_t) * t->n_vocab);
    if (!t->scores || !t->attr || !t->eog || !t->special_rank) return TM_ENOMEM;

    const void *data;
    if (tm_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data) == 0) {
        if ((et != TM_GGUF_FLOAT32 && et != TM_GGUF_INT32) || n < (uint64_t)t->n_vocab)
            return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.scores: bad type or count");
        for (int32_t i = 0; i < t->n_vocab; i++)
            t->scores[i] = et == TM_GGUF_FLOAT32 ? arr_f32(data, i) : (float)arr_i32(data, i);
    }
    memset(t->attr, TM_TATTR_NORMAL, (size_t)t->n_vocab);
    if (tm_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data) == 0) {
        if (et != TM_GGUF_INT32 || n < (uint64_t)t->n_vocab)
            return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.token_type: bad type or count");
        static const uint8_t by_type[7] = {0, TM_TATTR_NORMAL, TM_TATTR_UNKNOWN, TM_TATTR_CONTROL,
                                           TM_TATTR_USER_DEFINED, TM_TATTR_UNUSED, TM_TATTR_BYTE};
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int32_t ty = arr_i32(data, i);
            t->attr[i] = ty >= 0 && ty < 7 ? by_type[ty] : 0;
        }
    }
    return 0;
}

/* Special ids: vocab defaults, overridden by metadata when in range. */
static void load_special_ids(tm_tokenizer *t, const tm_gguf *g, int32_t *fim) {
    struct { const char *key; int32_t *id; } keys[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},         {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.eot_token_id", &t->eot},         {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.unknown_token_id", &t->unk},     {"tokenizer.ggml.fim_pre_token_id", &fim[0]},
        {"tokenizer.ggml.fim_suf_token_id", &fim[1]},     {"tokenizer.ggml.fim_mid_token_id", &fim[2]},
        {"tokenizer.ggml.fim_pad_token_id", &fim[3]},     {"tokenizer.ggml.fim_rep_token_id", &fim[4]},
        {"tokenizer.ggml.fim_sep_token_id", &fim[5]},     {"tokenizer.ggml.prefix_token_id", &fim[0]},
        {"tokenizer.ggml.suffix_token_id", &fim[1]},      {"tokenizer.ggml.middle_token_id", &fim[2]},
    };
    for (size_t k = 0; k < TM_ARRAY_LEN(keys); k++) {
        int32_t *id = keys[k].id;
        if (*id >= t->n_vocab) *id = -1;
        uint32_t v;
        if (tm_gguf_get_u32(g, keys[k].key, &v) == 0 && v < (uint32_t)t->n_vocab) *id = (int32_t)v;
    }
}

/* llama.cpp's name lists (llama_vocab::impl::load, "auto-detect special tokens by text"). */
static const char *const k_eot_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>", NULL};
static const char *const k_eom_names[] = {"<|eom_id|>", NULL};
static const char *const k_fim_names[6][9] = {
    {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
     "<|code_prefix|>", "<|prefix|>", NULL},
    {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
     "<|code_suffix|>", "<|suffix|>", NULL},
    {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
     "<|code_middle|>", "<|middle|>", NULL},
    {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL},
    {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL},
    {"<|file_sep|>", NULL},
};
static const char *const k_eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[", NULL};
static const char *const k_always_render[] = {"<|channel|>", "<|message|>", "<|start|>",
                                              "<|constrain|>", NULL};

/* Name-based fix-ups and the end-of-generation set, in llama.cpp's order. */
static void detect_special(tm_tokenizer *t, int32_t *fim) {
    int32_t *slots[8] = {&t->eot, &t->eom, &fim[0], &fim[1], &fim[2], &fim[3], &fim[4], &fim[5]};
    const char *const *lists[8] = {k_eot_names, k_eom_names, k_fim_names[0], k_fim_names[1],
                                   k_fim_names[2], k_fim_names[3], k_fim_names[4], k_fim_names[5]};
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *s = tm_strtab_str(&t->strs, i, &len);
        for (int k = 0; k < 8; k++) {
            if (*slots[k] < 0 && in_list(s, len, lists[k])) {
                *slots[k] = i;
                t->attr[i] |= TM_TATTR_CONTROL;
            }
        }
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *s = tm_strtab_str(&t->strs, i, &len);
        if ((t->attr[i] & TM_TATTR_CONTROL) && strstr(s, "unused")) t->attr[i] |= TM_TATTR_UNUSED;
    }
    for (int k = 3; k < 6; k++)
        if (fim[k] >= 0) t->eog[fim[k]] = 1;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *s = tm_strtab_str(&t->strs, i, &len);
        if (in_list(s, len, k_eog_names)) {
            t->eog[i] = 1;
            t->attr[i] |= TM_TATTR_CONTROL;
        }
        if (in_list(s, len, k_always_render)) t->attr[i] = TM_TATTR_USER_DEFINED;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;

    /* <|end|> is not an end of generation where the vocab also has <|return|>+<|call|>
     * (o200k_harmony) or <|calls|>+<|flush|> (solar-open). */
    int32_t ret = find_text(t, "<|return|>"), call = find_text(t, "<|call|>");
    int32_t calls = find_text(t, "<|calls|>"), flush = find_text(t, "<|flush|>");
    int32_t end = find_text(t, "<|end|>");
    int has_call = (call >= 0 && t->eog[call]) || (calls >= 0 && t->eog[calls]);
    if (end >= 0 && t->eog[end] && has_call &&
        ((ret >= 0 && t->eog[ret]) || (flush >= 0 && t->eog[flush]))) {
        t->eog[end] = 0;
        t->attr[end] = TM_TATTR_USER_DEFINED;
    }
    /* A vocab with <|tool_response> or <|plamo:eos|> uses </s> as a normal token. */
    int32_t tr = find_text(t, "<|tool_response>"), pe = find_text(t, "<|plamo:eos|>");
    int32_t s_end = find_text(t, "</s>");
    if (s_end >= 0 && t->eog[s_end] && ((tr >= 0 && t->eog[tr]) || (pe >= 0 && t->eog[pe]))) {
        t->eog[s_end] = 0;
        t->attr[s_end] = TM_TATTR_NORMAL;
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int build_special_cache(tm_tokenizer *t) {
    const int mask = TM_TATTR_CONTROL | TM_TATTR_USER_DEFINED | TM_TATTR_UNKNOWN;
    t->special = malloc(sizeof(int32_t) * t->n_vocab);
    t->special_lens = malloc(sizeof(uint32_t) * t->n_vocab);
    if (!t->special || !t->special_lens) return TM_ENOMEM;
    /* Sort key: longest text first, then lowest id (llama.cpp's sort leaves ties to
     * std::sort; they only matter when two equal-length specials overlap in a text). */
    uint64_t *keys = malloc(sizeof(uint64_t) * t->n_vocab);
    if (!keys) return TM_ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & mask)
            keys[t->n_special++] = (uint64_t)(UINT32_MAX - t->strs.len[i]) << 32 | (uint32_t)i;
    qsort(keys, (size_t)t->n_special, sizeof(uint64_t), cmp_u64);
    for (int k = 0; k < t->n_special; k++) t->special[k] = (int32_t)(uint32_t)keys[k];
    free(keys);
    for (int32_t i = 0; i < t->n_vocab; i++) t->special_rank[i] = -1;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        uint32_t len = t->strs.len[id];
        t->special_rank[id] = k;
        if (t->n_special_lens == 0 || t->special_lens[t->n_special_lens - 1] != len)
            t->special_lens[t->n_special_lens++] = len;
        uint8_t c0 = (uint8_t)t->strs.pool[t->strs.off[id]];
        t->special_first[c0 >> 3] |= (uint8_t)(1u << (c0 & 7));
    }
    return 0;
}

/* Bytes each token stands for when decoded. */
static int build_pieces(tm_tokenizer *t) {
    size_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) total += t->strs.len[i];
    t->pieces = malloc(total + 1);
    t->piece_off = malloc(sizeof(uint32_t) * ((size_t)t->n_vocab + 1));
    if (!t->pieces || !t->piece_off) return TM_ENOMEM;
    size_t pos = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *s = tm_strtab_str(&t->strs, i, &len);
        uint8_t a = t->attr[i];
        t->piece_off[i] = (uint32_t)pos;
        if (a & (TM_TATTR_UNKNOWN | TM_TATTR_CONTROL | TM_TATTR_USER_DEFINED)) {
            memcpy(t->pieces + pos, s, len);
            pos += len;
        } else if (a & TM_TATTR_NORMAL) {
            if (t->kind == TM_TOK_BPE) {
                pos += tm_bpe_decode_text(t, s, len, t->pieces + pos);
            } else { /* U+2581 (3 bytes) -> ' ': the piece never grows */
                for (size_t j = 0; j < len; j++) {
                    if (j + 2 < len && memcmp(s + j, "\xe2\x96\x81", 3) == 0) {
                        t->pieces[pos++] = ' ';
                        j += 2;
                    } else {
                        t->pieces[pos++] = s[j];
                    }
                }
            }
        } else if (a & TM_TATTR_BYTE) {
            unsigned v;
            char tail;
            if (len == 6 && sscanf(s, "<0x%2X%c", &v, &tail) == 2 && tail == '>')
                t->pieces[pos++] = (char)v;
            else if (t->kind == TM_TOK_BPE)
                pos += tm_bpe_decode_text(t, s, len, t->pieces + pos);
        } /* unused / undefined tokens decode to nothing, as in llama.cpp */
    }
    t->piece_off[t->n_vocab] = (uint32_t)pos;
    return 0;
}

/* --- create / destroy ---------------------------------------------------------------- */

int tm_tokenizer_create(const tm_gguf *g, tm_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    const char *model;
    if (tm_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL))
        return tm_fail(err, err_len, TM_EFORMAT, "tokenizer.ggml.model: missing");
    tm_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return TM_ENOMEM;
    int rc = 0;
    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    int32_t fim[6] = {-1, -1, -1, -1, -1, -1};
    if (strcmp(model, "gpt2") == 0) {
        t->kind = TM_TOK_BPE;
        t->bos = t->eos = 11; /* llama.cpp's BPE defaults when metadata has none */
    } else if (strcmp(model, "llama") == 0) {
        t->kind = TM_TOK_SPM;
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = 1;
        t->add_space_prefix = 1;
    } else {
        rc = tm_fail(err, err_len, TM_EUNSUPPORTED, "unknown tokenizer model '%s'", model);
        goto error;
    }
    const char *pre = "default";
    if (tm_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) == 0 && pre[0] == '\0') pre = "default";
    snprintf(t->pre_name, sizeof(t->pre_name), "%s", pre);

    if ((rc = load_tokens(t, g, err, err_len))) goto error;
    if (t->kind == TM_TOK_BPE) {
        if ((rc = tm_bpe_init(t, g, err, err_len))) goto error; /* also sets pre defaults */
    }
    int v;
    if (tm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v) == 0) t->add_space_prefix = v;
    load_special_ids(t, g, fim);
    if (tm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v) == 0) t->add_bos = v;
    if (tm_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &v) == 0) t->add_eos = v;
    detect_special(t, fim);
    if ((rc = build_special_cache(t))) goto error;
    if (t->kind == TM_TOK_SPM && (rc = tm_spm_init(t, err, err_len))) goto error;
    if ((rc = build_pieces(t))) goto error;
    *out = t;
    return 0;
error:
    if (rc == TM_ENOMEM) tm_fail(err, err_len, rc, "out of memory loading the tokenizer");
    tm_tokenizer_destroy(t);
    return rc;
}

void tm_tokenizer_destroy(tm_tokenizer *t) {
    if (!t) return;
    tm_bpe_deinit(t);
    tm_strtab_deinit(&t->strs);
    free(t->scores);
    free(t->attr);
    free(t->eog);
    free(t->pieces);
    free(t->piece_off);
    free(t->special);
    free(t->special_rank);
    free(t->special_lens);
    free(t);
}

/* --- queries -------------------------------------------------------------------------- */

int tm_tokenizer_n_vocab(const tm_tokenizer *t) { return t->n_vocab; }
int32_t tm_tokenizer_bos(const tm_tokenizer *t) { return t->bos; }
int32_t tm_tokenizer_eos(const tm_tokenizer *t) { return t->eos; }
int tm_tokenizer_add_bos(const tm_tokenizer *t) { return t->add_bos; }
int tm_tokenizer_is_eog(const tm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}
int tm_tokenizer_is_text(const tm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab &&
           (t->attr[id] & (TM_TATTR_NORMAL | TM_TATTR_BYTE | TM_TATTR_USER_DEFINED)) &&
           !(t->attr[id] & (TM_TATTR_CONTROL | TM_TATTR_UNKNOWN | TM_TATTR_UNUSED));
}
int tm_tokenizer_strips_first_space(const tm_tokenizer *t) { return t->add_space_prefix; }
const char *tm_tokenizer_kind(const tm_tokenizer *t) { return t->kind == TM_TOK_BPE ? "gpt2" : "llama"; }
const char *tm_tokenizer_pre(const tm_tokenizer *t) { return t->pre_name; }
int32_t tm_tokenizer_find(const tm_tokenizer *t, const char *text) { return find_text(t, text); }

/* --- encoding ------------------------------------------------------------------------- */

typedef struct special_hit {
    uint32_t pos;  /* byte offset in the text */
    int32_t rank;  /* position in t->special (processing order) */
} special_hit;

static int cmp_hit(const void *a, const void *b) {
    const special_hit *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}
static int cmp_hit_pos(const void *a, const void *b) {
    const special_hit *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Which special tokens llama.cpp cuts out of text. It takes each special token in order
 * (longest first) and splits every raw fragment at each of its occurrences, left to
 * right; an occurrence counts only if it lies wholly in text no earlier cut took. Finding
 * every candidate occurrence first (by hash lookup at positions whose byte can start a
 * special token) and then accepting them in that same order gives the same cuts without
 * scanning the text once per special token. *hits is malloc'd, sorted by position. */
static int find_specials(const tm_tokenizer *t, const char *text, size_t len, int parse_special,
                         special_hit **hits, int *n_hits) {
    *hits = NULL;
    *n_hits = 0;
    if (t->n_special == 0 || len == 0) return 0;
    special_hit *h = NULL;
    int n = 0, cap = 0;
    for (size_t p = 0; p < len; p++) {
        uint8_t c = (uint8_t)text[p];
        if (!(t->special_first[c >> 3] & (1u << (c & 7)))) continue;
        for (int k = 0; k < t->n_special_lens; k++) {
            uint32_t L = t->special_lens[k];
            if (L > len - p) continue;
            int32_t id = tm_strtab_find(&t->strs, text + p, L);
            if (id < 0 || id >= t->n_vocab || t->special_rank[id] < 0) continue;
            if (!parse_special && (t->attr[id] & (TM_TATTR_CONTROL | TM_TATTR_UNKNOWN))) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                special_hit *nh = realloc(h, sizeof(*h) * cap);
                if (!nh) {
                    free(h);
                    return TM_ENOMEM;
                }
                h = nh;
            }
            h[n++] = (special_hit){(uint32_t)p, t->special_rank[id]};
        }
    }
    if (n == 0) return 0;
    qsort(h, (size_t)n, sizeof(*h), cmp_hit);
    uint8_t *taken = calloc(len, 1);
    if (!taken) {
        free(h);
        return TM_ENOMEM;
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        uint32_t L = t->strs.len[t->special[h[i].rank]];
        int free_span = 1;
        for (uint32_t j = 0; j < L && free_span; j++) free_span = !taken[h[i].pos + j];
        if (!free_span) continue;
        memset(taken + h[i].pos, 1, L);
        h[kept++] = h[i];
    }
    free(taken);
    qsort(h, (size_t)kept, sizeof(*h), cmp_hit_pos);
    *hits = h;
    *n_hits = kept;
    return 0;
}

static int encode_fragment(const tm_tokenizer *t, const char *s, size_t len, int prev_special,
                           tm_ids *out) {
    if (t->kind == TM_TOK_BPE) return tm_bpe_encode(t, s, len, out);
    return tm_spm_encode(t, s, len, t->add_space_prefix && prev_special, out);
}

int tm_tokenizer_encode(const tm_tokenizer *t, const char *text, size_t len, int add_special,
                        int parse_special, int32_t **ids, int *n_ids) {
    tm_ids out = {0};
    special_hit *hits = NULL;
    int n_hits = 0, rc;
    *ids = NULL;
    *n_ids = 0;
    if ((rc = tm_ids_push(&out, 0))) goto error; /* allocate, so an empty result is non-NULL */
    out.n = 0;
    if (add_special && t->add_bos && t->bos >= 0 && (rc = tm_ids_push(&out, t->bos))) goto error;
    if ((rc = find_specials(t, text, len, parse_special, &hits, &n_hits))) goto error;
    size_t pos = 0;
    int prev_special = 1; /* SentencePiece prefixes a space to the first fragment too */
    for (int i = 0; i <= n_hits; i++) {
        size_t end = i < n_hits ? hits[i].pos : len;
        if (end > pos) {
            if ((rc = encode_fragment(t, text + pos, end - pos, prev_special, &out))) goto error;
            prev_special = 0;
        }
        if (i < n_hits) {
            int32_t id = t->special[hits[i].rank];
            if ((rc = tm_ids_push(&out, id))) goto error;
            pos = hits[i].pos + t->strs.len[id];
            prev_special = 1;
        }
    }
    if (add_special && t->add_eos && t->eos >= 0 && (rc = tm_ids_push(&out, t->eos))) goto error;
    free(hits);
    *ids = out.v;
    *n_ids = out.n;
    return 0;
error:
    free(hits);
    free(out.v);
    return rc;
}
