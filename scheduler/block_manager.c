/* block_manager.c - page pool, free list, reference counts and the prefix-cache index. */
#include "scheduler/block_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/common.h"

/* Invariants:
 * - ref[p] >= 0; p is on the free list exactly when ref[p] == 0 (in_free[p] mirrors it).
 * - Free list order: unkeyed pages first, then keyed pages from least to most recently
 *   released; alloc takes the head, so empty pages go before any cached one.
 * - keyed[p] iff p is in the hash index (bucket chain of key[p].lo); its tokens[], key,
 *   parent and salt describe the page's content. No two keyed pages share a key.
 * - n_free == length of the free list; n_cached == keyed pages with ref 0. */
struct tm_block_manager {
    int n_blocks;         /* pages in the pool */
    int block_size;       /* tokens per page */
    int enable_cache;     /* lookup/register active */
    int32_t *ref;         /* (n_blocks) reference counts */
    uint8_t *in_free;     /* (n_blocks) on the free list */
    int32_t *prev, *next; /* (n_blocks) free-list links, -1 at the ends */
    int32_t head, tail;   /* free-list ends, -1 when empty */
    int n_free;           /* free-list length */
    int n_cached;         /* keyed pages with ref 0 */
    uint8_t *keyed;       /* (n_blocks) page is in the hash index */
    tm_hash128 *key;      /* (n_blocks) page key when keyed */
    tm_hash128 *parent;   /* (n_blocks) parent key when keyed, compared on a hit */
    tm_hash128 *salt;     /* (n_blocks) salt key when keyed, compared on a hit */
    int32_t *tokens;      /* (n_blocks, block_size) page tokens when keyed */
    int32_t *bucket;      /* (n_buckets) first keyed page of each bucket, -1 none */
    int32_t *chain;       /* (n_blocks) next keyed page in the same bucket, -1 none */
    uint32_t n_buckets;   /* power of two >= 2 * n_blocks */
    uint8_t *scratch;     /* (32 + 4 * block_size) hash input: parent, salt, tokens */
};

static void list_remove(tm_block_manager *bm, int32_t p) {
    int32_t a = bm->prev[p], b = bm->next[p];
    if (a >= 0) bm->next[a] = b; else bm->head = b;
    if (b >= 0) bm->prev[b] = a; else bm->tail = a;
    bm->prev[p] = bm->next[p] = -1;
    bm->in_free[p] = 0;
    bm->n_free--;
    if (bm->keyed[p]) bm->n_cached--;
}

static void list_push_head(tm_block_manager *bm, int32_t p) {
    bm->prev[p] = -1;
    bm->next[p] = bm->head;
    if (bm->head >= 0) bm->prev[bm->head] = p; else bm->tail = p;
    bm->head = p;
    bm->in_free[p] = 1;
    bm->n_free++;
}

static void list_push_tail(tm_block_manager *bm, int32_t p) {
    bm->next[p] = -1;
    bm->prev[p] = bm->tail;
    if (bm->tail >= 0) bm->next[bm->tail] = p; else bm->head = p;
    bm->tail = p;
    bm->in_free[p] = 1;
    bm->n_free++;
    bm->n_cached++; /* only keyed pages go to the tail */
}

int tm_bm_create(int n_blocks, int block_size, int enable_cache, tm_block_manager **out) {
    *out = NULL;
    if (n_blocks < 1 || block_size < 1) return TM_EINVAL;
    tm_block_manager *bm = calloc(1, sizeof *bm);
    if (!bm) return TM_ENOMEM;
    bm->n_blocks = n_blocks;
    bm->block_size = block_size;
    bm->enable_cache = enable_cache;
    bm->n_buckets = 1;
    while (bm->n_buckets < 2u * (uint32_t)n_blocks) bm->n_buckets <<= 1;
    size_t n = (size_t)n_blocks;
    bm->ref = calloc(n, sizeof *bm->ref);
    bm->in_free = calloc(n, 1);
    bm->prev = malloc(n * sizeof *bm->prev);
    bm->next = malloc(n * sizeof *bm->next);
    bm->keyed = calloc(n, 1);
    bm->key = calloc(n, sizeof *bm->key);
    bm->parent = calloc(n, sizeof *bm->parent);
    bm->salt = calloc(n, sizeof *bm->salt);
    bm->tokens = calloc(n * (size_t)block_size, sizeof *bm->tokens);
    bm->bucket = malloc(bm->n_buckets * sizeof *bm->bucket);
    bm->chain = malloc(n * sizeof *bm->chain);
    bm->scratch = malloc(32 + 4 * (size_t)block_size);
    if (!bm->ref || !bm->in_free || !bm->prev || !bm->next || !bm->keyed || !bm->key ||
        !bm->parent || !bm->salt || !bm->tokens || !bm->bucket || !bm->chain || !bm->scratch) {
        tm_bm_destroy(bm);
        return TM_ENOMEM;
    }
    for (uint32_t i = 0; i < bm->n_buckets; i++) bm->bucket[i] = -1;
    bm->head = bm->tail = -1;
    for (int32_t p = n_blocks - 1; p >= 0; p--) {
        bm->chain[p] = -1;
        list_push_head(bm, p); /* page 0 first: deterministic order */
    }
    *out = bm;
    return TM_OK;
}

void tm_bm_destroy(tm_block_manager *bm) {
    if (!bm) return;
    free(bm->ref);
    free(bm->in_free);
    free(bm->prev);
    free(bm->next);
    free(bm->keyed);
    free(bm->key);
    free(bm->parent);
    free(bm->salt);
    free(bm->tokens);
    free(bm->bucket);
    free(bm->chain);
    free(bm->scratch);
    free(bm);
}

int tm_bm_n_total(const tm_block_manager *bm) { return bm->n_blocks; }
int tm_bm_n_free(const tm_block_manager *bm) { return bm->n_free; }
int tm_bm_n_used(const tm_block_manager *bm) { return bm->n_blocks - bm->n_free; }
int tm_bm_n_cached(const tm_block_manager *bm) { return bm->n_cached; }
int tm_bm_block_size(const tm_block_manager *bm) { return bm->block_size; }
int tm_bm_refcount(const tm_block_manager *bm, int32_t p) { return bm->ref[p]; }
int tm_bm_is_cached(const tm_block_manager *bm, int32_t p) { return bm->keyed[p]; }

static int hash_eq(tm_hash128 a, tm_hash128 b) { return a.lo == b.lo && a.hi == b.hi; }

tm_hash128 tm_bm_salt_key(const char *salt) {
    tm_hash128 h = {0, 0};
    if (!salt || !*salt) return h;
    XXH128_hash_t x = XXH3_128bits(salt, strlen(salt));
    h.lo = x.low64;
    h.hi = x.high64;
    if (h.lo == 0 && h.hi == 0) h.lo = 1; /* keep (0, 0) meaning "no salt" */
    return h;
}

tm_hash128 tm_bm_page_key(const tm_block_manager *bm, tm_hash128 parent, tm_hash128 salt,
                          const int32_t *tokens) {
    uint8_t *buf = bm->scratch;
    memcpy(buf, &parent, 16);
    memcpy(buf + 16, &salt, 16);
    memcpy(buf + 32, tokens, 4 * (size_t)bm->block_size);
    XXH128_hash_t x = XXH3_128bits(buf, 32 + 4 * (size_t)bm->block_size);
    tm_hash128 h = {x.low64, x.high64};
    return h;
}

static void index_remove(tm_block_manager *bm, int32_t p) {
    int32_t *link = &bm->bucket[bm->key[p].lo & (bm->n_buckets - 1)];
    while (*link != p) link = &bm->chain[*link];
    *link = bm->chain[p];
    bm->chain[p] = -1;
    bm->keyed[p] = 0;
}

/* The keyed page whose key, parent, salt and tokens all equal the arguments, or -1. */
static int32_t index_find(const tm_block_manager *bm, tm_hash128 key, tm_hash128 parent,
                          tm_hash128 salt, const int32_t *tokens) {
    for (int32_t p = bm->bucket[key.lo & (bm->n_buckets - 1)]; p >= 0; p = bm->chain[p]) {
        if (hash_eq(bm->key[p], key) && hash_eq(bm->parent[p], parent) &&
            hash_eq(bm->salt[p], salt) &&
            memcmp(bm->tokens + (size_t)p * bm->block_size, tokens,
                   4 * (size_t)bm->block_size) == 0)
            return p;
    }
    return -1;
}

static int32_t index_find_key(const tm_block_manager *bm, tm_hash128 key) {
    for (int32_t p = bm->bucket[key.lo & (bm->n_buckets - 1)]; p >= 0; p = bm->chain[p])
        if (hash_eq(bm->key[p], key)) return p;
    return -1;
}

int tm_bm_alloc(tm_block_manager *bm, int32_t *page) {
    int32_t p = bm->head;
    if (p < 0) return TM_EBUSY;
    list_remove(bm, p);
    if (bm->keyed[p]) index_remove(bm, p); /* eviction: its memory is needed now */
    bm->ref[p] = 1;
    *page = p;
    return TM_OK;
}

void tm_bm_ref(tm_block_manager *bm, int32_t p) {
    if (bm->ref[p] == 0) list_remove(bm, p);
    bm->ref[p]++;
}

void tm_bm_unref(tm_block_manager *bm, int32_t p) {
    if (--bm->ref[p] > 0) return;
    if (bm->keyed[p]) list_push_tail(bm, p);
    else list_push_head(bm, p);
}

int tm_bm_lookup(tm_block_manager *bm, const int32_t *tokens, int n_tokens, int max_pages,
                 tm_hash128 salt, int32_t *pages, tm_hash128 *keys) {
    if (!bm->enable_cache) return 0;
    int bs = bm->block_size, n = TM_MIN(n_tokens / bs, max_pages);
    tm_hash128 parent = {0, 0};
    for (int i = 0; i < n; i++) {
        const int32_t *t = tokens + (size_t)i * bs;
        tm_hash128 k = tm_bm_page_key(bm, parent, salt, t);
        int32_t p = index_find(bm, k, parent, salt, t);
        if (p < 0) return i;
        pages[i] = p;
        keys[i] = k;
        parent = k;
    }
    return n;
}

tm_hash128 tm_bm_register(tm_block_manager *bm, int32_t p, tm_hash128 parent, tm_hash128 salt,
                          const int32_t *tokens) {
    tm_hash128 k = tm_bm_page_key(bm, parent, salt, tokens);
    if (!bm->enable_cache || bm->keyed[p] || index_find_key(bm, k) >= 0) return k;
    size_t bs = (size_t)bm->block_size;
    memcpy(bm->tokens + (size_t)p * bs, tokens, 4 * bs);
    bm->key[p] = k;
    bm->parent[p] = parent;
    bm->salt[p] = salt;
    uint32_t b = (uint32_t)(k.lo & (bm->n_buckets - 1));
    bm->chain[p] = bm->bucket[b];
    bm->bucket[b] = p;
    bm->keyed[p] = 1;
    return k;
}

int32_t tm_bm_evict_lru(tm_block_manager *bm) {
    /* Unkeyed free pages sit at the head, so the first keyed one is the LRU. */
    for (int32_t p = bm->head; p >= 0; p = bm->next[p]) {
        if (!bm->keyed[p]) continue;
        list_remove(bm, p); /* while keyed, so n_cached drops */
        index_remove(bm, p);
        list_push_head(bm, p); /* the list stays "unkeyed first" */
        return p;
    }
    return -1;
}

int tm_bm_check(const tm_block_manager *bm, char *err, size_t err_len) {
    int n_list = 0, n_cached = 0, seen_keyed = 0, n_keyed = 0;
    int32_t prev = -1;
    for (int32_t p = bm->head; p >= 0; p = bm->next[p]) {
        if (++n_list > bm->n_blocks) return tm_fail(err, err_len, TM_EINVAL, "free list cycles");
        if (bm->prev[p] != prev) return tm_fail(err, err_len, TM_EINVAL, "page %d: bad prev", p);
        if (!bm->in_free[p] || bm->ref[p] != 0)
            return tm_fail(err, err_len, TM_EINVAL, "page %d on free list with ref %d", p,
                           bm->ref[p]);
        if (bm->keyed[p]) {
            seen_keyed = 1;
            n_cached++;
        } else if (seen_keyed) {
            return tm_fail(err, err_len, TM_EINVAL, "unkeyed page %d after a keyed one", p);
        }
        prev = p;
    }
    if (prev != bm->tail) return tm_fail(err, err_len, TM_EINVAL, "bad tail");
    if (n_list != bm->n_free)
        return tm_fail(err, err_len, TM_EINVAL, "n_free %d, list %d", bm->n_free, n_list);
    if (n_cached != bm->n_cached)
        return tm_fail(err, err_len, TM_EINVAL, "n_cached %d, counted %d", bm->n_cached, n_cached);
    int n_used = 0;
    for (int32_t p = 0; p < bm->n_blocks; p++) {
        if (bm->ref[p] < 0) return tm_fail(err, err_len, TM_EINVAL, "page %d ref %d", p, bm->ref[p]);
        if (bm->ref[p] > 0) {
            n_used++;
            if (bm->in_free[p]) return tm_fail(err, err_len, TM_EINVAL, "page %d used and free", p);
        } else if (!bm->in_free[p]) {
            return tm_fail(err, err_len, TM_EINVAL, "page %d ref 0 but not free", p);
        }
        if (bm->keyed[p]) {
            n_keyed++;
            if (index_find_key(bm, bm->key[p]) != p)
                return tm_fail(err, err_len, TM_EINVAL, "page %d key not indexed", p);
            if (!hash_eq(tm_bm_page_key(bm, bm->parent[p], bm->salt[p],
                                        bm->tokens + (size_t)p * bm->block_size),
                         bm->key[p]))
                return tm_fail(err, err_len, TM_EINVAL, "page %d key does not match content", p);
        }
    }
    if (n_used + bm->n_free != bm->n_blocks)
        return tm_fail(err, err_len, TM_EINVAL, "used %d + free %d != total %d", n_used,
                       bm->n_free, bm->n_blocks);
    int n_indexed = 0;
    for (uint32_t b = 0; b < bm->n_buckets; b++)
        for (int32_t p = bm->bucket[b]; p >= 0; p = bm->chain[p])
            if (++n_indexed > bm->n_blocks || !bm->keyed[p])
                return tm_fail(err, err_len, TM_EINVAL, "hash index corrupt at page %d", p);
    if (n_indexed != n_keyed)
        return tm_fail(err, err_len, TM_EINVAL, "indexed %d, keyed %d", n_indexed, n_keyed);
    return TM_OK;
}
