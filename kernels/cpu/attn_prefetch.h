/* attn_prefetch.h - private to the SIMD attention kernels (ops_*.c): the order in which
 * a chunk reads its cache lines, for prefetching them a few at a time. */
#ifndef TM_CPU_ATTN_PREFETCH_H
#define TM_CPU_ATTN_PREFETCH_H

#include <stdint.h>

#include "common/common.h"
#include "kernels/cpu/ops.h"

/* The cache lines of a chunk's first nv_max keys in the order the kernel reads them: the
 * K tiles of its segments, then their V rows. The inner loops take a line or two from it
 * per step, so the fills overlap the arithmetic. Issued as one burst per piece instead,
 * they took every fill buffer and stalled the core (AVX-512: a third of the kernel's time
 * sat on the prefetch instructions). */
typedef struct tm_pf_stream {
    const tm_attn_chunk *a;
    int nv_max;          /* keys covered */
    int phase, seg, j0;  /* current region: phase 0 K, 1 V, of segment seg (first key j0) */
    const char *p, *end; /* next line to fetch, end of the current region */
} tm_pf_stream;

/* Bytes of the K tile of n keys of one segment (f16: hd rows k_dim_stride apart; int8:
 * hd / 4 rows of 4-byte groups), without an int8 tile's scales. */
static inline int64_t tm_pf_k_bytes(const tm_attn_chunk *a, int64_t n) {
    if (a->k8) return 4 * (((int64_t)a->head_dim / 4 - 1) * a->k_dim_stride + n);
    return 2 * (((int64_t)a->head_dim - 1) * a->k_dim_stride + n);
}

/* Moves to the next region; 0 when there is none. */
static inline int tm_pf_region(tm_pf_stream *s) {
    const tm_attn_chunk *a = s->a;
    for (;;) {
        if (s->seg >= 0) s->j0 += a->seg_len[s->seg];
        s->seg++;
        if (s->seg >= a->n_seg || s->j0 >= s->nv_max) {
            if (s->phase == 1) return 0;
            s->phase = 1, s->seg = 0, s->j0 = 0;
        }
        if (s->j0 >= s->nv_max) return 0;
        const int64_t n = TM_MIN(a->seg_len[s->seg], s->nv_max - s->j0);
        const char *b;
        if (a->k8) { /* the values, then (after the rest of the tile) their scales */
            b = s->phase == 0 ? (const char *)a->k8[s->seg] : (const char *)a->v8[s->seg];
            s->end = (const char *)((s->phase == 0 ? a->ks[s->seg] : a->vs[s->seg]) + n);
        } else {
            b = s->phase == 0 ? (const char *)a->k[s->seg] : (const char *)a->v[s->seg];
            s->end = b + (s->phase == 0 ? tm_pf_k_bytes(a, n) : 2 * n * a->head_dim);
        }
        s->p = (const char *)((uintptr_t)b & ~(uintptr_t)63);
        if (n > 0) return 1;
    }
}

static inline void tm_pf_init(tm_pf_stream *s, const tm_attn_chunk *a, int nv_max) {
    *s = (tm_pf_stream){.a = a, .nv_max = nv_max, .seg = -1};
    if (nv_max <= 0 || !tm_pf_region(s)) s->p = s->end = NULL;
}

/* Prefetches the next n lines of the stream into L2 (as the matmul's tiles: into L1 they
 * evicted lines still to be read; SmolLM2 decode at 4000 tokens of context +3%). */
static inline __attribute__((always_inline)) void tm_pf_step(tm_pf_stream *s, int n) {
    for (; n > 0; n--) {
        if (s->p >= s->end && (!s->end || !tm_pf_region(s))) {
            s->p = s->end = NULL;
            return;
        }
        __builtin_prefetch(s->p, 0, 2);
        s->p += 64;
    }
}

/* Lines of the K tile of a piece of n keys (int8: and its scales). */
static inline int tm_pf_k_lines(const tm_attn_chunk *a, int n) {
    return (int)(tm_pf_k_bytes(a, n) / 64 + 1 + (a->k8 != NULL));
}

#endif
