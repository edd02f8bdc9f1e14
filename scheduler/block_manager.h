/* block_manager.h - the KV page pool: page ids, reference counts, a free list and the
 * prefix cache. It knows nothing of sequences or tensors: callers hold page ids in their
 * block tables and say when they take or drop a reference.
 *
 * Prefix cache: a full page is keyed by XXH3-128 over (parent page's key, cache-salt
 * key, its block_size token ids). A lookup walks the chain from the first page and also
 * compares the stored tokens, parent key and salt key of every hit, so a hash collision
 * cannot serve one prompt's K/V to another. A page whose count drops to 0 keeps its key
 * and sits on the free list in least-recently-released order; it is evicted (key
 * dropped) only when an allocation needs its memory. Pages that hold no key sit at the
 * head of the free list and are used first.
 *
 * Engine thread only (tests drive it directly). No allocation after create. */
#ifndef TM_BLOCK_MANAGER_H
#define TM_BLOCK_MANAGER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_hash128 {
    uint64_t lo, hi; /* XXH3-128 halves; (0, 0) is the empty chain / no salt */
} tm_hash128;

typedef struct tm_block_manager tm_block_manager;

/* A pool of n_blocks pages of block_size tokens. enable_cache 0 turns lookup and
 * register into no-ops. TM_EINVAL for sizes < 1, TM_ENOMEM. */
int tm_bm_create(int n_blocks, int block_size, int enable_cache, tm_block_manager **out);
void tm_bm_destroy(tm_block_manager *bm); /* NULL is a no-op */

int tm_bm_n_total(const tm_block_manager *bm);
int tm_bm_n_free(const tm_block_manager *bm);   /* count 0 (cached or empty) */
int tm_bm_n_used(const tm_block_manager *bm);   /* count > 0 */
int tm_bm_n_cached(const tm_block_manager *bm); /* count 0 and still keyed */
int tm_bm_block_size(const tm_block_manager *bm);
int tm_bm_refcount(const tm_block_manager *bm, int32_t page);
int tm_bm_is_cached(const tm_block_manager *bm, int32_t page); /* holds a key */

/* Key of a salt string (NULL or "" gives (0, 0)). */
tm_hash128 tm_bm_salt_key(const char *salt);
/* Key of a full page: XXH3-128 of (parent, salt, tokens[0..block_size)). */
tm_hash128 tm_bm_page_key(const tm_block_manager *bm, tm_hash128 parent, tm_hash128 salt,
                          const int32_t *tokens);

/* Takes a free page (empty ones first, then the least recently released cached one,
 * whose key is dropped) with count 1 into *page. TM_EBUSY when none is free. */
int tm_bm_alloc(tm_block_manager *bm, int32_t *page);
/* Adds a reference to page (a prefix hit); a page with count 0 leaves the free list. */
void tm_bm_ref(tm_block_manager *bm, int32_t page);
/* Drops a reference; at 0 the page joins the free list (tail if keyed, head if not). */
void tm_bm_unref(tm_block_manager *bm, int32_t page);

/* Walks the chain over the full pages of tokens[0..n_tokens) (at most max_pages) and
 * writes the hit page ids and their keys to pages/keys; returns the number of leading
 * pages found. Takes no references; call tm_bm_ref on the hits before the next alloc. */
int tm_bm_lookup(tm_block_manager *bm, const int32_t *tokens, int n_tokens, int max_pages,
                 tm_hash128 salt, int32_t *pages, tm_hash128 *keys);
/* Registers page (count > 0, full of tokens) under key = page_key(parent, salt, tokens).
 * When an equal key is already registered the page stays unkeyed (the earlier one keeps
 * serving hits). Returns the key either way, for chaining the next page. */
tm_hash128 tm_bm_register(tm_block_manager *bm, int32_t page, tm_hash128 parent,
                          tm_hash128 salt, const int32_t *tokens);
/* Drops the key of the least recently released cached page; returns it, or -1. */
int32_t tm_bm_evict_lru(tm_block_manager *bm);

/* Checks every internal invariant (free-list links and counts, hash index, counts);
 * 0 or TM_EINVAL with the first violation in err. For tests; O(n_blocks). */
int tm_bm_check(const tm_block_manager *bm, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
