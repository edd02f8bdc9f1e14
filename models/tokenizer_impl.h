/* tokenizer_impl.h - private to models/tokenizer*.c: the tokenizer's tables and the
 * helpers the BPE and SentencePiece halves share. Not a public header. */
#ifndef TM_TOKENIZER_IMPL_H
#define TM_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "models/tokenizer.h"

/* Token attributes, from tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte) plus the same name-based fix-ups llama.cpp applies. */
enum {
    TM_TATTR_UNKNOWN = 1 << 0,
    TM_TATTR_UNUSED = 1 << 1,
    TM_TATTR_NORMAL = 1 << 2,
    TM_TATTR_CONTROL = 1 << 3,
    TM_TATTR_USER_DEFINED = 1 << 4,
    TM_TATTR_BYTE = 1 << 5,
};

enum { TM_TOK_BPE = 0, TM_TOK_SPM = 1 };

/* Pre-tokenizer families; each names one sequence of split regexes. */
enum { TM_PRE_DEFAULT, TM_PRE_GPT2, TM_PRE_SMOLLM, TM_PRE_LLAMA3, TM_PRE_QWEN2 };

#define TM_TOK_MAX_REGEX 4

/* Interned byte strings with a hash index. Entries [0, n_vocab) are the vocab, so an
 * entry's index is its token id; BPE appends merge parts that are not tokens after that.
 * Invariant: find(s) returns the highest index whose text is s (llama.cpp's token_to_id
 * keeps the last duplicate). */
typedef struct tm_strtab {
    char *pool;        /* all strings back to back, each NUL-terminated */
    size_t pool_len;   /* bytes used */
    size_t pool_cap;   /* bytes allocated */
    uint32_t *off;     /* (cap) start of entry i in pool */
    uint32_t *len;     /* (cap) length of entry i */
    int32_t n;         /* entries */
    int32_t cap;       /* entries allocated */
    int32_t *slots;    /* (mask + 1) entry index or -1; open addressing, linear probing */
    uint32_t mask;     /* slot count - 1 (power of two, kept at most half full) */
} tm_strtab;

int tm_strtab_init(tm_strtab *t, int32_t cap_hint);
void tm_strtab_deinit(tm_strtab *t);
/* Appends s as a new entry (even if equal text exists) and points the index at it.
 * Returns its index, or TM_ENOMEM. */
int32_t tm_strtab_add(tm_strtab *t, const char *s, size_t len);
int32_t tm_strtab_find(const tm_strtab *t, const char *s, size_t len); /* index or -1 */
static inline const char *tm_strtab_str(const tm_strtab *t, int32_t i, size_t *len) {
    *len = t->len[i];
    return t->pool + t->off[i];
}

/* BPE merge table: (left, right) string ids -> rank and the id of their concatenation. */
typedef struct tm_merge_slot {
    uint64_t key;   /* (left << 32 | right) + 1; 0 marks an empty slot */
    int32_t rank;   /* line number in tokenizer.ggml.merges (lower merges first) */
    int32_t merged; /* strtab id of left + right */
} tm_merge_slot;

struct tm_tokenizer {
    int kind;                 /* TM_TOK_BPE or TM_TOK_SPM */
    int pre_type;             /* TM_PRE_* (BPE only) */
    char pre_name[64];        /* tokenizer.ggml.pre as given ("default" when absent) */
    int32_t n_vocab;          /* tokens */
    tm_strtab strs;           /* token texts (+ BPE merge parts that are not tokens) */
    float *scores;            /* (n_vocab) SentencePiece scores; 0 when absent */
    uint8_t *attr;            /* (n_vocab) TM_TATTR_* bits */
    uint8_t *eog;             /* (n_vocab) 1 if the token ends generation */
    char *pieces;             /* decoded bytes of every token, back to back */
    uint32_t *piece_off;      /* (n_vocab + 1) token i's piece is [off[i], off[i+1]) */

    int32_t bos, eos, eot, eom, unk; /* special ids or -1 */
    int add_bos;              /* prepend BOS when add_special */
    int add_eos;              /* append EOS when add_special */
    int add_space_prefix;     /* SPM: a space before text that starts a fragment */
    int ignore_merges;        /* BPE: a pre-split word that is a token is used whole */

    /* Special tokens that llama.cpp splits out of the text before tokenizing: control,
     * user-defined and unknown tokens, longest text first (ties by id). */
    int32_t *special;         /* (n_special) token ids in that order */
    int32_t *special_rank;    /* (n_vocab) position in special[] or -1 */
    int n_special;            /* count */
    uint32_t *special_lens;   /* distinct text lengths of special tokens, descending */
    int n_special_lens;       /* count */
    uint8_t special_first[32];/* bitmap: bytes that start some special token */

    /* BPE */
    tm_merge_slot *merges;    /* hash table, merge_mask + 1 slots (NULL for SPM) */
    uint32_t merge_mask;      /* slots - 1 */
    int32_t byte_sym[256];    /* strtab id of the GPT-2 character for each byte, or -1 */
    char byte_chr[256][3];    /* GPT-2 byte -> unicode character, UTF-8 */
    uint8_t byte_chr_len[256];/* its length (1 or 2) */
    int16_t byte_of_cp[324];  /* GPT-2 character (code point) -> byte, or -1 */
    int n_regex;              /* split regexes applied in sequence */
    void *regex[TM_TOK_MAX_REGEX]; /* pcre2_code_8 *, compiled with JIT when available */

    /* SPM */
    int32_t byte_tok[256];    /* token of byte fallback <0xXX> (or the byte itself), or -1 */
};

/* Growable id buffer used while encoding. */
typedef struct tm_ids {
    int32_t *v; /* ids */
    int n;      /* used */
    int cap;    /* allocated */
} tm_ids;
int tm_ids_push(tm_ids *b, int32_t id); /* 0 or TM_ENOMEM */

/* tokenizer_bpe.c */
int tm_bpe_init(tm_tokenizer *t, const tm_gguf *g, char *err, size_t err_len);
void tm_bpe_deinit(tm_tokenizer *t);
/* Decodes a normal token's GPT-2 characters back to bytes (appends to out, which has
 * room for len bytes). Returns the byte count. */
size_t tm_bpe_decode_text(const tm_tokenizer *t, const char *s, size_t len, char *out);
/* Tokenizes one fragment of raw text (no special tokens inside). */
int tm_bpe_encode(const tm_tokenizer *t, const char *text, size_t len, tm_ids *out);

/* tokenizer_spm.c */
int tm_spm_init(tm_tokenizer *t, char *err, size_t err_len);
int tm_spm_encode(const tm_tokenizer *t, const char *text, size_t len, int prefix_space,
                  tm_ids *out);

/* Length of the UTF-8 sequence a lead byte announces, as llama.cpp counts it
 * (continuation bytes count as 1). */
static inline size_t tm_utf8_len(uint8_t c) {
    static const uint8_t lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lut[c >> 4];
}

/* SentencePiece vocabs that prefix a space when encoding drop it from the first piece
 * of the text; a leading BOS does not count as text. */
static inline int tm_strip_first_space(const tm_tokenizer *t, int32_t id, const char *p, size_t n) {
    return t->add_space_prefix && id != t->bos && n > 0 && p[0] == ' ';
}

#endif
