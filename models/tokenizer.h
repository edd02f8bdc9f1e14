/* tokenizer.h - text <-> token ids from GGUF metadata.
 *
 * Two vocab kinds (tokenizer.ggml.model): "gpt2" byte-level BPE, with the pre-split
 * regex chosen by tokenizer.ggml.pre (smollm, llama-bpe, qwen2, default gpt2), and
 * "llama" SentencePiece-style (scores, byte fallback <0xXX>). Special/control tokens
 * written in the text map to their ids when parse_special is set. Results match
 * llama.cpp on the same file (tests/golden).
 *
 * A tm_tokenizer is immutable after create; any thread may use it concurrently. */
#ifndef TM_TOKENIZER_H
#define TM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "models/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_tokenizer tm_tokenizer;

/* Builds the tokenizer from g's metadata (copies what it needs; g may be closed after).
 * TM_EUNSUPPORTED for an unknown model or pre-tokenizer, TM_EFORMAT for broken vocab. */
int tm_tokenizer_create(const tm_gguf *g, tm_tokenizer **out, char *err, size_t err_len);
void tm_tokenizer_destroy(tm_tokenizer *t); /* NULL is a no-op */

int tm_tokenizer_n_vocab(const tm_tokenizer *t);
int32_t tm_tokenizer_bos(const tm_tokenizer *t); /* -1 if none */
int32_t tm_tokenizer_eos(const tm_tokenizer *t); /* -1 if none */
int tm_tokenizer_add_bos(const tm_tokenizer *t); /* metadata add_bos_token (or vocab default) */
/* Is id an end-of-generation token (eos, eot, <|im_end|>, <|eot_id|>, <end_of_turn>, ...)? */
int tm_tokenizer_is_eog(const tm_tokenizer *t, int32_t id);
/* Does id stand for text (a normal, byte or user-defined token) rather than markup (control,
 * unknown, unused)? Structured output only builds text from text tokens. */
int tm_tokenizer_is_text(const tm_tokenizer *t, int32_t id);
/* 1 when the detokenizer drops the leading space of the first token's piece
 * (SentencePiece vocabs that prefix a space when encoding). */
int tm_tokenizer_strips_first_space(const tm_tokenizer *t);
/* "gpt2" or "llama"; and the pre-tokenizer name ("smollm", "default", ...). */
const char *tm_tokenizer_kind(const tm_tokenizer *t);
const char *tm_tokenizer_pre(const tm_tokenizer *t);
/* Id of the token whose vocab text is exactly text, or -1. */
int32_t tm_tokenizer_find(const tm_tokenizer *t, const char *text);

/* Encodes len bytes of text. add_special: prepend BOS when the model wants it (and
 * append EOS if add_eos_token). parse_special: special tokens written in the text become
 * their ids. *ids is malloc'd (caller frees). Returns 0 or TM_ENOMEM. */
int tm_tokenizer_encode(const tm_tokenizer *t, const char *text, size_t len, int add_special,
                        int parse_special, int32_t **ids, int *n_ids);

/* The bytes one token stands for (byte-level decoded; byte-fallback tokens give their
 * byte; special tokens their text). Points into t. 0 bytes for an out-of-range id. */
const char *tm_tokenizer_piece(const tm_tokenizer *t, int32_t id, size_t *len);

/* Whole-sequence decode into a malloc'd NUL-terminated string (strips the SentencePiece
 * leading space as llama.cpp does). Invalid UTF-8 is kept as bytes. */
int tm_tokenizer_decode(const tm_tokenizer *t, const int32_t *ids, int n_ids, char **text,
                        size_t *len);

/* Incremental detokenizer: push tokens one at a time and get only complete UTF-8
 * characters out, never a broken sequence. Caller-owned state; _init before use. */
typedef struct tm_detok {
    uint8_t pending[8]; /* bytes of an incomplete UTF-8 character */
    int n_pending;      /* how many */
    int n_tokens;       /* tokens pushed so far (for the leading-space rule) */
} tm_detok;

void tm_detok_init(tm_detok *d);
/* Appends token id; writes the text that became complete to out (cap >= 64 + piece len
 * is always enough) and returns the byte count. */
size_t tm_detok_push(tm_detok *d, const tm_tokenizer *t, int32_t id, char *out, size_t cap);
/* End of stream: bytes still pending are invalid UTF-8 and come out as U+FFFD each. */
size_t tm_detok_flush(tm_detok *d, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
