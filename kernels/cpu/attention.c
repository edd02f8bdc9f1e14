/* attention.c - the CPU backend's paged attention (tm_cpu_op_attention): the scheduler
 * that cuts a batch into work items, runs them on the thread pool with a kernel table's
 * attn_chunk, and merges the per-chunk softmax partials. The chunk kernels themselves
 * are in ops_scalar.c (the reference) and ops_<isa>.c; the cache layout is in ops.h.
 *
 * Work items are (sequence, kv head, up to TM_ATTN_ROWS query rows, a range of key
 * chunks). Each item handles all n_group query heads of its kv head, so K and V are read
 * once per group. A row's result is the left fold, in chunk order, of per-chunk softmax
 * partials (tm_attn_fold). When there are too few items to keep every thread busy (one
 * long decode), the big items are split into one item per chunk ("split-KV", as in
 * flash-decoding); each writes its partial to scratch and the last one to finish folds
 * them in chunk order, the same arithmetic as the unsplit path.
 *
 * A sliding window (Gemma's local layers) skips the key chunks before the first one any
 * row of a tile sees, and masks the keys before each row's window inside the chunks it
 * runs (tm_cpu_attn_shape_scores); chunks keep their alignment, so a row's result does
 * not depend on its tile either way. */
#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/ops.h"

enum {
    TM_ATTN_ROWS = 16,             /* query rows per work item (at most) */
    TM_ATTN_CLAIMS_PER_THREAD = 4, /* claims each thread gets at least, when items go by kv heads */
    TM_ALIGN = 64,                 /* scratch arrays start on a cache line */
};

typedef struct tm_attn_item {
    int seq;    /* sequence index */
    int head;   /* kv head */
    int t0, t1; /* batch token rows [t0, t1) */
    int c0, c1; /* key chunks [c0, c1) (c0 > 0: the earlier ones are outside every row's window) */
    int group;  /* split group, or -1 when this item covers all chunks of its rows */
} tm_attn_item;

/* A run of items claimed in order: a thread's own, those of the rows it gave to kv_store
 * (tm_cpu_share of the tokens), so the page tiles it just wrote, and read the step before,
 * are in its cache; or the split chunks, which every thread takes last. */
typedef struct tm_attn_slice {
    _Alignas(64) atomic_int next; /* first unclaimed item */
    int end;                      /* one past the slice's last item */
} tm_attn_slice;

typedef struct tm_attn_group {
    atomic_int n_done; /* chunk items finished; the one that makes it n_chunks merges */
    int c_first;       /* the group's first chunk */
    int n_chunks;      /* chunk items in the group (chunk c_first + i writes partial i) */
    float *part;       /* (n_chunks, nq, head_dim + 2) partial: o, then m, l */
} tm_attn_group;

typedef struct tm_attn_job {
    const tm_cpu_kernels *k;        /* kernels */
    const struct tm_kv_cache *kv;   /* cache */
    const tm_batch *b;              /* batch */
    float *out;                     /* (n_tokens, n_heads, head_dim) */
    const float *q;                 /* (n_tokens, n_heads, head_dim) */
    int layer, n_heads, n_group;    /* layer; query heads; query heads per kv head */
    float scale;                    /* softmax scale */
    int window;                     /* > 0: a row sees keys pos - window + 1..pos only */
    float softcap;                  /* > 0: scores soft-capped (backend.h) */
    tm_attn_item *items;            /* (n_items) */
    int n_items;                    /* work items */
    tm_attn_slice *slices;          /* (n_slices + 1) each thread's run of whole-row items,
                                     * then one of the split chunks that all share */
    int n_slices;                   /* the pool's threads (a run on fewer takes them all) */
    tm_attn_group *groups;          /* split groups */
    char *thread_mem;               /* (nth, thread_bytes) per-thread scratch */
    size_t thread_bytes;            /* bytes per thread */
} tm_attn_job;

/* (M, L, O) = fold of the running state with one chunk's partial (m, l, o). */
static void tm_attn_fold(float *M, float *L, float *O, float m, float l, const float *o, int hd) {
    if (l == 0.0f) return; /* chunk had no visible key */
    if (*L == 0.0f) {
        *M = m;
        *L = l;
        memcpy(O, o, (size_t)hd * sizeof(float));
        return;
    }
    float mn = m > *M ? m : *M;
    float a = expf(*M - mn), c = expf(m - mn);
    *L = *L * a + l * c;
    for (int d = 0; d < hd; d++) O[d] = O[d] * a + o[d] * c;
    *M = mn;
}

static void tm_attn_write(const tm_attn_job *j, const tm_attn_item *it, int i, const float *O,
                          float L) {
    int hd = j->kv->shape.head_dim;
    int t = it->t0 + i / j->n_group, h = it->head * j->n_group + i % j->n_group;
    float *dst = j->out + ((int64_t)t * j->n_heads + h) * hd;
    float r = 1.0f / L;
    for (int d = 0; d < hd; d++) dst[d] = O[d] * r;
}

/* The next array of n_bytes at *off from base, on its own cache lines; NULL when base
 * is NULL (a layout that only counts the bytes). */
static void *tm_attn_next(char *base, size_t *off, size_t n_bytes) {
    void *at = base ? base + *off : NULL;
    *off += (n_bytes + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    return at;
}

/* Per-thread scratch layout, for nq_max queries. */
typedef struct tm_attn_tmem {
    float *scores, *m, *l, *o;       /* chunk outputs: (nq, CHUNK), (nq), (nq), (nq, hd) */
    float *kv_f32;                   /* (2 * TM_ATTN_SUB * hd) kernel scratch */
    float *M, *L, *O;                /* running fold state: (nq), (nq), (nq, hd) */
    int *n_vis, *n_skip, *seg_len;   /* (nq), (nq), (CHUNK + 1) */
    const uint16_t **kseg, **vseg;   /* (CHUNK + 1) f16 segments */
    const uint8_t **k8seg;           /* (CHUNK + 1) int8 segments */
    const int8_t **v8seg;
    const float **kscale, **vscale;  /* (CHUNK + 1) their scales */
    int8_t *q8;                      /* (nq, hd) int8 queries */
    float *q8s;                      /* (nq) */
    int32_t *q8sum;                  /* (nq) */
} tm_attn_tmem;

static size_t tm_attn_tmem_layout(int nq, int hd, char *base, tm_attn_tmem *t) {
    size_t off = 0;
#define TM_CARVE(field, type, count)                                                      \
    do {                                                                                  \
        void *at_ = tm_attn_next(base, &off, (size_t)(count) * sizeof(type));             \
        if (t) t->field = at_;                                                            \
    } while (0)
    TM_CARVE(scores, float, (size_t)nq * TM_ATTN_CHUNK);
    TM_CARVE(kv_f32, float, 2 * TM_ATTN_SUB * hd);
    TM_CARVE(m, float, nq);
    TM_CARVE(l, float, nq);
    TM_CARVE(o, float, (size_t)nq * hd);
    TM_CARVE(M, float, nq);
    TM_CARVE(L, float, nq);
    TM_CARVE(O, float, (size_t)nq * hd);
    TM_CARVE(n_vis, int, nq);
    TM_CARVE(n_skip, int, nq);
    TM_CARVE(seg_len, int, TM_ATTN_CHUNK + 1);
    TM_CARVE(kseg, const uint16_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(vseg, const uint16_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(k8seg, const uint8_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(v8seg, const int8_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(kscale, const float *, TM_ATTN_CHUNK + 1);
    TM_CARVE(vscale, const float *, TM_ATTN_CHUNK + 1);
    TM_CARVE(q8, int8_t, (size_t)nq * hd);
    TM_CARVE(q8s, float, nq);
    TM_CARVE(q8sum, int32_t, nq);
#undef TM_CARVE
    return off;
}

/* Runs chunk c of item `it` into tm->m, l, o. */
static void tm_attn_run_chunk(const tm_attn_job *j, const tm_attn_item *it, int c, tm_attn_tmem *tm) {
    const tm_kv_shape *s = &j->kv->shape;
    const tm_batch *b = j->b;
    const int hd = s->head_dim, bs = s->block_size, G = j->n_group;
    const int nq = (it->t1 - it->t0) * G;
    const int k0 = c * TM_ATTN_CHUNK;
    const int kmax = b->pos[it->t1 - 1] + 1; /* positions ascend within a sequence */
    const int n_keys = TM_MIN(TM_ATTN_CHUNK, kmax - k0);
    const int32_t *table = b->block_table + (int64_t)it->seq * b->max_blocks;
    const int i8 = s->dtype == TM_KV_INT8;
    const size_t tile_bytes = tm_kv_tile_bytes(s), scale_off = tm_kv_tile_scale_offset(s);
    int n_seg = 0;
    for (int key = k0; key < k0 + n_keys;) {
        int blk = key / bs, off = key % bs, len = TM_MIN(bs - off, k0 + n_keys - key);
        assert(blk < b->max_blocks && table[blk] >= 0 && table[blk] < s->n_blocks);
        if (i8) {
            const size_t tile = tm_cpu_kv_tile(s, j->layer, table[blk], it->head) * tile_bytes;
            const uint8_t *kt = j->kv->k8 + tile, *vt = j->kv->v8 + tile;
            tm->k8seg[n_seg] = kt + 4 * off;
            tm->v8seg[n_seg] = (const int8_t *)vt + (size_t)off * hd;
            tm->kscale[n_seg] = (const float *)(const void *)(kt + scale_off) + off;
            tm->vscale[n_seg] = (const float *)(const void *)(vt + scale_off) + off;
        } else {
            size_t tile = tm_cpu_kv_offset(s, j->layer, table[blk], it->head);
            tm->kseg[n_seg] = j->kv->k + tile + off;
            tm->vseg[n_seg] = j->kv->v + tile + (size_t)off * hd;
        }
        tm->seg_len[n_seg++] = len;
        key += len;
    }
    for (int i = 0; i < nq; i++) {
        const int p = b->pos[it->t0 + i / G];
        int vis = p + 1 - k0; /* causal: token t sees keys 0..pos[t] */
        tm->n_vis[i] = vis < 0 ? 0 : TM_MIN(vis, n_keys);
        /* a sliding window also hides keys before pos[t] - window + 1 */
        tm->n_skip[i] = j->window > 0 ? TM_MAX(0, p - j->window + 1 - k0) : 0;
    }
    tm_attn_chunk a = {
        .q = j->q + ((int64_t)it->t0 * j->n_heads + (int64_t)it->head * G) * hd,
        .q_row_stride = (int64_t)j->n_heads * hd, .n_group = G, .nq = nq, .n_vis = tm->n_vis,
        .n_skip = j->window > 0 ? tm->n_skip : NULL, .softcap = j->softcap,
        .n_keys = n_keys, .n_seg = n_seg, .k = i8 ? NULL : tm->kseg, .k_dim_stride = bs,
        .v = i8 ? NULL : tm->vseg, .k8 = i8 ? tm->k8seg : NULL, .v8 = i8 ? tm->v8seg : NULL,
        .ks = i8 ? tm->kscale : NULL, .vs = i8 ? tm->vscale : NULL, .q8 = tm->q8, .q8s = tm->q8s,
        .q8sum = tm->q8sum,
        .seg_len = tm->seg_len, .head_dim = hd, .scale = j->scale, .scores = tm->scores,
        .kv_f32 = tm->kv_f32, .m = tm->m, .l = tm->l, .o = tm->o,
    };
    j->k->attn_chunk(&a);
}

/* The item's queries as int8 (an int8 cache quantizes them too, ops.h), once for all its chunks. */
static void tm_attn_quantize_queries(const tm_attn_job *j, const tm_attn_item *it, tm_attn_tmem *tm) {
    const int hd = j->kv->shape.head_dim, G = j->n_group, nq = (it->t1 - it->t0) * G;
    const float *q = j->q + ((int64_t)it->t0 * j->n_heads + (int64_t)it->head * G) * hd;
    for (int i = 0; i < nq; i++) {
        int8_t *q8 = tm->q8 + (int64_t)i * hd;
        j->k->kv_quantize(q + (int64_t)(i / G) * j->n_heads * hd + (int64_t)(i % G) * hd, hd, q8, &tm->q8s[i]);
        int32_t sum = 0;
        for (int d = 0; d < hd; d++) sum += q8[d];
        tm->q8sum[i] = sum;
    }
}

static void tm_attn_run_item(tm_attn_job *j, const tm_attn_item *it, tm_attn_tmem *tm) {
    const int hd = j->kv->shape.head_dim;
    const int nq = (it->t1 - it->t0) * j->n_group;
    if (j->kv->shape.dtype == TM_KV_INT8) tm_attn_quantize_queries(j, it, tm);
    if (it->group < 0) {
        for (int i = 0; i < nq; i++) tm->L[i] = 0.0f;
        for (int c = it->c0; c < it->c1; c++) {
            tm_attn_run_chunk(j, it, c, tm);
            for (int i = 0; i < nq; i++)
                tm_attn_fold(&tm->M[i], &tm->L[i], tm->O + (int64_t)i * hd, tm->m[i], tm->l[i],
                             tm->o + (int64_t)i * hd, hd);
        }
        for (int i = 0; i < nq; i++) tm_attn_write(j, it, i, tm->O + (int64_t)i * hd, tm->L[i]);
        return;
    }
    tm_attn_group *g = &j->groups[it->group];
    const int64_t part_floats = (int64_t)nq * (hd + 2);
    tm_attn_run_chunk(j, it, it->c0, tm);
    float *part = g->part + (int64_t)(it->c0 - g->c_first) * part_floats;
    for (int i = 0; i < nq; i++) {
        memcpy(part + (int64_t)i * (hd + 2), tm->o + (int64_t)i * hd, (size_t)hd * sizeof(float));
        part[(int64_t)i * (hd + 2) + hd] = tm->m[i];
        part[(int64_t)i * (hd + 2) + hd + 1] = tm->l[i];
    }
    /* acq_rel: publishes this partial; the last one sees everyone's */
    if (atomic_fetch_add_explicit(&g->n_done, 1, memory_order_acq_rel) != g->n_chunks - 1) return;
    for (int i = 0; i < nq; i++) {
        tm->L[i] = 0.0f;
        for (int c = 0; c < g->n_chunks; c++) {
            const float *pc = g->part + c * part_floats + (int64_t)i * (hd + 2);
            tm_attn_fold(&tm->M[i], &tm->L[i], tm->O + (int64_t)i * hd, pc[hd], pc[hd + 1], pc, hd);
        }
        tm_attn_write(j, it, i, tm->O + (int64_t)i * hd, tm->L[i]);
    }
}

static void tm_attn_fn(void *ctx, int ith, int nth) {
    tm_attn_job *j = ctx;
    tm_attn_tmem tm;
    tm_attn_tmem_layout(TM_ATTN_ROWS * j->n_group, j->kv->shape.head_dim,
                        j->thread_mem + (size_t)ith * j->thread_bytes, &tm);
    /* With items enough, they are claimed a kv head count at a time: the items of one row
     * tile, one per kv head, then run on one thread in a row, and their K (and V) tiles
     * lie side by side in each page, so the reads continue one stream instead of starting
     * 2 KiB runs on two cores (bench_ops --case decode16: 12-18% faster). */
    const int per = j->n_items >= TM_ATTN_CLAIMS_PER_THREAD * j->kv->shape.n_kv_heads * nth
                        ? j->kv->shape.n_kv_heads : 1;
    /* its own slice first, then what is left of the others', then the split chunks */
    for (int k = 0; k <= j->n_slices; k++) {
        tm_attn_slice *sl = &j->slices[k < j->n_slices ? (ith + k) % j->n_slices : j->n_slices];
        for (;;) {
            const int i0 = atomic_fetch_add_explicit(&sl->next, per, memory_order_relaxed);
            if (i0 >= sl->end) break;
            for (int i = i0; i < TM_MIN(i0 + per, sl->end); i++) tm_attn_run_item(j, &j->items[i], &tm);
        }
    }
}

/* The first key chunk any row of the tile starting at row t0 sees (0 without a window;
 * chunks stay aligned to multiples of TM_ATTN_CHUNK so that a row's partials, and so its
 * bits, do not depend on the rows it shares a tile with). */
static int tm_attn_first_chunk(const tm_batch *b, int t0, int window) {
    return window > 0 ? TM_MAX(0, b->pos[t0] - window + 1) / TM_ATTN_CHUNK : 0;
}

/* Does the tile [t0, t1) get split into its chunks [c0, ...)? */
static int tm_attn_split(const tm_batch *b, int t0, int t1, int c0, int64_t split_cost) {
    int kmax = b->pos[t1 - 1] + 1, n_keys = kmax - c0 * TM_ATTN_CHUNK;
    return n_keys > TM_ATTN_CHUNK && (int64_t)(t1 - t0) * n_keys > split_cost;
}

/* What a plan of the work items comes to: the sizes of the arrays a job needs. */
typedef struct tm_attn_plan {
    int n_items;        /* work items */
    int n_split_items;  /* of which chunks of split tiles (they come last) */
    int n_groups;       /* split tiles x kv heads */
    size_t part_floats; /* floats of the split groups' partials */
    int64_t cost;       /* (query row, key) pairs over all items and kv heads */
} tm_attn_plan;

/* The one walk over the (sequence x row tile) pairs of b that decides the work items:
 * tiles of `rows` query rows, one item per kv head, and a tile whose rows x keys exceed
 * split_cost split into one item per key chunk. It counts into *p; with j it also writes
 * the items (whole tiles first, in row order, then the split chunks) and the groups
 * (their partials carved from parts) into j's arrays, sized by a count-only call with the
 * same arguments, so the counting, sizing and filling passes cannot disagree. */
static void tm_attn_plan_items(const tm_batch *b, int n_kvh, int G, int hd, int rows, int window,
                               int64_t split_cost, tm_attn_plan *p, tm_attn_job *j, float *parts) {
    const int first_chunk = j ? p->n_items - p->n_split_items : 0; /* where the counted plan put them */
    tm_attn_plan c = {0};
    for (int sq = 0; sq < b->n_seqs; sq++)
        for (int t0 = b->seq_start[sq]; t0 < b->seq_start[sq + 1]; t0 += rows) {
            const int t1 = TM_MIN(t0 + rows, b->seq_start[sq + 1]);
            const int kmax = b->pos[t1 - 1] + 1; /* positions ascend within a sequence */
            const int c0 = tm_attn_first_chunk(b, t0, window);
            const int c_end = (kmax + TM_ATTN_CHUNK - 1) / TM_ATTN_CHUNK, n_chunks = c_end - c0;
            c.cost += (int64_t)n_kvh * (t1 - t0) * (kmax - c0 * TM_ATTN_CHUNK);
            if (!tm_attn_split(b, t0, t1, c0, split_cost)) {
                for (int h = 0; h < n_kvh && j; h++)
                    j->items[c.n_items - c.n_split_items + h] = (tm_attn_item){sq, h, t0, t1, c0, c_end, -1};
                c.n_items += n_kvh;
                continue;
            }
            const size_t part = (size_t)n_chunks * (t1 - t0) * G * (hd + 2); /* one group's */
            for (int h = 0; h < n_kvh && j; h++) {
                const int gi = c.n_groups + h;
                tm_attn_group *g = &j->groups[gi];
                atomic_init(&g->n_done, 0);
                g->c_first = c0;
                g->n_chunks = n_chunks;
                g->part = parts + c.part_floats + (size_t)h * part;
                for (int ch = 0; ch < n_chunks; ch++)
                    j->items[first_chunk + c.n_split_items + h * n_chunks + ch] =
                        (tm_attn_item){sq, h, t0, t1, c0 + ch, c0 + ch + 1, gi};
            }
            c.n_items += n_kvh * n_chunks;
            c.n_split_items += n_kvh * n_chunks;
            c.n_groups += n_kvh;
            c.part_floats += (size_t)n_kvh * part;
        }
    assert(!j || (c.n_items == p->n_items && c.n_split_items == p->n_split_items && c.n_groups == p->n_groups &&
                  c.part_floats == p->part_floats));
    *p = c;
}

/* Lays a plan's arrays out from base (items, slices, groups, the split partials, then
 * nth per-thread memories) into j and *parts, and returns the bytes they take; with
 * base NULL it only counts them. */
static size_t tm_attn_job_layout(const tm_attn_plan *p, int nth, char *base, tm_attn_job *j, float **parts) {
    size_t off = 0;
    void *items = tm_attn_next(base, &off, (size_t)p->n_items * sizeof(tm_attn_item));
    void *slices = tm_attn_next(base, &off, (size_t)(nth + 1) * sizeof(tm_attn_slice));
    void *groups = tm_attn_next(base, &off, (size_t)p->n_groups * sizeof(tm_attn_group));
    void *part = tm_attn_next(base, &off, p->part_floats * sizeof(float));
    if (base) {
        j->items = items, j->slices = slices, j->groups = groups, *parts = part;
        j->thread_mem = base + off;
    }
    return off + (size_t)nth * j->thread_bytes;
}

void tm_cpu_op_attention(const tm_cpu_kernels *k, tm_threadpool *pool, tm_cpu_scratch *scratch,
                         float *out, const float *q, const struct tm_kv_cache *kv, int layer,
                         const tm_batch *b, int n_heads, float scale, int window, float softcap) {
    const tm_kv_shape *s = &kv->shape;
    const int n_kvh = s->n_kv_heads, hd = s->head_dim;
    assert(n_heads % n_kvh == 0 && layer >= 0 && layer < s->n_layers);
    const int G = n_heads / n_kvh;
    const int nth = pool ? tm_threadpool_size(pool) : 1;
    if (b->n_tokens == 0) return;

    /* Shorter row tiles until there are a couple of items per thread (rows are
     * independent, so the tile height never changes a result). */
    int rows = TM_ATTN_ROWS;
    tm_attn_plan p;
    tm_attn_plan_items(b, n_kvh, G, hd, rows, window, INT64_MAX, &p, NULL, NULL);
    while (rows > 1 && p.n_items < 2 * nth)
        tm_attn_plan_items(b, n_kvh, G, hd, rows /= 2, window, INT64_MAX, &p, NULL, NULL);

    /* Split the items that alone exceed half a thread's fair share into their chunks;
     * if that layout does not fit in memory, go without. */
    tm_attn_job j = {.k = k, .kv = kv, .b = b, .out = out, .q = q, .layer = layer, .n_heads = n_heads,
                     .n_group = G, .scale = scale, .window = window, .softcap = softcap,
                     .thread_bytes = tm_attn_tmem_layout(TM_ATTN_ROWS * G, hd, NULL, NULL)};
    int64_t split_cost = nth > 1 ? p.cost / (2 * nth) : INT64_MAX;
    tm_attn_plan_items(b, n_kvh, G, hd, rows, window, split_cost, &p, NULL, NULL);
    if (tm_cpu_scratch_reserve(scratch, tm_attn_job_layout(&p, nth, NULL, &j, NULL)) != TM_OK) {
        split_cost = INT64_MAX;
        tm_attn_plan_items(b, n_kvh, G, hd, rows, window, split_cost, &p, NULL, NULL);
        const size_t need = tm_attn_job_layout(&p, nth, NULL, &j, NULL);
        if (tm_cpu_scratch_reserve(scratch, need) != TM_OK) {
            TM_ERRORF("attention: out of memory for %zu bytes of scratch", need);
            for (int64_t i = 0; i < (int64_t)b->n_tokens * n_heads * hd; i++) out[i] = NAN;
            return;
        }
    }

    /* Carve the scratch and fill in the items. */
    float *parts = NULL;
    tm_attn_job_layout(&p, nth, scratch->data, &j, &parts);
    tm_attn_plan_items(b, n_kvh, G, hd, rows, window, split_cost, &p, &j, parts);
    const int n_whole = p.n_items - p.n_split_items;
    j.n_items = p.n_items;
    j.n_slices = nth;
    /* slice i: the whole-row items (in row order) that start in thread i's share of the
     * tokens; the split chunks are claimed after every slice */
    for (int i = 0, it = 0; i < nth; i++) {
        int64_t lo, hi;
        tm_cpu_share(b->n_tokens, i, nth, 1, &lo, &hi);
        atomic_init(&j.slices[i].next, it);
        while (it < n_whole && j.items[it].t0 < hi) it++;
        j.slices[i].end = i == nth - 1 ? n_whole : it;
    }
    atomic_init(&j.slices[nth].next, n_whole);
    j.slices[nth].end = p.n_items;
    if (pool && nth > 1 && p.n_items > 1) tm_threadpool_run(pool, tm_attn_fn, &j);
    else tm_attn_fn(&j, 0, 1);
}
