/* matmul.c - weight preparation and the driver: it prepares the activations, splits the
 * work over the thread pool and runs the kernels of one table (tm_mm_kernels, looked up
 * once per tm_cpu_matmul). Layouts and the table: matmul_impl.h. Portable C only: the
 * scalar reference is matmul_scalar.c, intrinsics live in matmul_<isa>.c. */
#include "kernels/cpu/matmul.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd.h"

/* One thread's slice of a job's units, claimed a chunk at a time: by its owner first,
 * then by threads that finished their own slice. On its own cache line, since the owner
 * claims from it while the others may too. */
typedef struct tm_mm_slice {
    _Alignas(64) atomic_llong next; /* first unclaimed unit */
    int64_t end;                    /* one past the slice's last unit */
} tm_mm_slice;

/* Packed weights are carved from 2 MiB-aligned chunks advised for transparent huge
 * pages (tm_alloc_huge): a weight stream on 4 KiB pages misses the TLB every 4 KiB, and
 * one allocation per tensor could not use huge pages (most tensors are under 2 MiB).
 * Single-sequence decode, which streams all weights per token, ran ~9% faster
 * (bench_engine, 4 alternating pairs). A chunk is freed when it is
 * no longer the one being filled and its last weight is gone, so weights may outlive
 * their tm_cpu_matmul. */
typedef struct tm_mm_chunk {
    uint8_t *base;
    size_t size, used;
    int live;    /* weights carved from it and not yet deinitialized */
    int retired; /* no longer filled: freed with its last weight */
} tm_mm_chunk;

enum { TM_MM_CHUNK_BYTES = 64 << 20 };

struct tm_cpu_matmul {
    tm_threadpool *pool; /* borrowed; NULL = run everything on the caller */
    const tm_mm_kernels *k; /* the kernels of its level */
    void *scratch;       /* quantized activations, 64-B aligned, grown on demand */
    size_t scratch_bytes;
    tm_mm_slice *slices; /* (pool size) reset by every job */
    tm_mm_chunk *chunk;  /* the chunk packed weights are carved from, or NULL */
};

static void tm_mm_chunk_release(tm_mm_chunk *c) {
    if (c->live > 0) return;
    if (!c->retired) { /* still being filled: start over (a model unloaded and loaded again) */
        c->used = 0;
        return;
    }
    free(c->base);
    free(c);
}

static void tm_mm_chunk_retire(tm_mm_chunk *c) {
    if (!c) return;
    c->retired = 1;
    tm_mm_chunk_release(c);
}

static tm_mm_chunk *tm_mm_chunk_new(size_t size) {
    tm_mm_chunk *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->size = size;
    c->base = tm_alloc_huge(size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    return c;
}

/* n bytes (64-B aligned) for a packed weight; *chunk_out gets the chunk to release. A
 * weight of a quarter chunk or more gets a chunk of its own (retired at once), so it
 * does not cut short the one being filled. */
static void *tm_mm_weight_alloc(tm_cpu_matmul *mm, size_t n, tm_mm_chunk **chunk_out) {
    n = (n + 63) / 64 * 64;
    tm_mm_chunk *c = mm->chunk;
    if (n >= TM_MM_CHUNK_BYTES / 4) {
        if (!(c = tm_mm_chunk_new(n))) return NULL;
        c->retired = 1;
    } else if (!c || c->size - c->used < n) {
        if (!(c = tm_mm_chunk_new(TM_MM_CHUNK_BYTES))) return NULL;
        tm_mm_chunk_retire(mm->chunk);
        mm->chunk = c;
    }
    void *p = c->base + c->used;
    c->used += n;
    c->live++;
    *chunk_out = c;
    return p;
}

static void *tm_mm_aligned_alloc(size_t n_bytes) {
    return aligned_alloc(64, (n_bytes + 63) / 64 * 64);
}

const tm_mm_kernels *tm_mm_kernels_get(int level) {
    switch (level) {
    case TM_SIMD_SCALAR: return tm_mm_kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
    case TM_SIMD_AVX2: return tm_mm_kernels_avx2();
    case TM_SIMD_AVX512VNNI: return tm_mm_kernels_avx512();
    case TM_SIMD_AMX: return tm_mm_kernels_amx();
#endif
#if defined(__aarch64__)
    case TM_SIMD_NEON: return tm_mm_kernels_neon();
#endif
    default: return NULL;
    }
}

tm_cpu_matmul *tm_cpu_matmul_create(tm_threadpool *pool, int simd) {
    const tm_mm_kernels *k = simd == TM_SIMD_AUTO || !tm_simd_supported(simd) ? NULL : tm_mm_kernels_get(simd);
    if (!k) return NULL;
    tm_cpu_matmul *mm = calloc(1, sizeof(*mm));
    if (!mm) return NULL;
    mm->pool = pool;
    mm->k = k;
    const int nth = pool ? tm_threadpool_size(pool) : 1;
    mm->slices = aligned_alloc(64, (size_t)nth * sizeof *mm->slices);
    if (!mm->slices) {
        free(mm);
        return NULL;
    }
    return mm;
}

void tm_cpu_matmul_destroy(tm_cpu_matmul *mm) {
    if (!mm) return;
    free(mm->slices);
    free(mm->scratch);
    tm_mm_chunk_retire(mm->chunk);
    free(mm);
}

static size_t tm_mm_pad64(size_t n) { return (n + 63) / 64 * 64; }

/* Packs pw's GGUF rows into tiles of layout pack, carved from mm's chunks. */
static int tm_mm_pack(tm_cpu_matmul *mm, tm_mm_weight *pw, const tm_mm_packing *pack, int64_t n_rows,
                      int64_t n_cols) {
    pack->layout(pw, n_cols);
    pw->n_tiles = (n_rows + TM_MM_TILE - 1) / TM_MM_TILE;
    const size_t total = (size_t)pw->n_tiles * pw->tile_bytes;
    pw->packed = tm_mm_weight_alloc(mm, total, &pw->chunk);
    if (!pw->packed) return TM_ENOMEM;
    memset(pw->packed, 0, total);
    for (int64_t ti = 0; ti < pw->n_tiles; ti++) pack->fill(pw, n_rows, n_cols, ti);
    pw->pack = pack;
    return TM_OK;
}

int tm_cpu_weight_init(tm_cpu_matmul *mm, tm_weight *w, tm_dtype dtype, int64_t n_rows,
                       int64_t n_cols, const void *src, char *err, size_t err_len) {
    memset(w, 0, sizeof(*w));
    /* The CPU multiplies what its scalar reference multiplies (tm_mm_entry). */
    if (!tm_mm_kernels_type(tm_mm_kernels_scalar(), dtype))
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "cpu matmul: unsupported weight dtype %s",
                       tm_dtype_name(dtype));
    if (n_rows <= 0 || n_cols <= 0 || tm_dtype_row_bytes(dtype, n_cols) < 0 || !src)
        return tm_fail(err, err_len, TM_EINVAL, "cpu matmul: bad %s weight shape %lld x %lld",
                       tm_dtype_name(dtype), (long long)n_rows, (long long)n_cols);
    tm_mm_weight *pw = calloc(1, sizeof(*pw));
    if (!pw) return tm_fail(err, err_len, TM_ENOMEM, "cpu matmul: out of memory");
    pw->src = src;
    const tm_mm_type *e = mm ? tm_mm_kernels_type(mm->k, dtype) : NULL;
    if (e && e->pack) {
        const int rc = tm_mm_pack(mm, pw, e->pack, n_rows, n_cols);
        if (rc) {
            free(pw);
            return tm_fail(err, err_len, rc, "cpu matmul: cannot repack %lld x %lld %s weight",
                           (long long)n_rows, (long long)n_cols, tm_dtype_name(dtype));
        }
    }
    w->dtype = dtype;
    w->n_rows = n_rows;
    w->n_cols = n_cols;
    w->data = pw->packed ? (void *)pw->packed : (void *)src;
    w->aux = pw;
    return TM_OK;
}

void tm_cpu_weight_deinit(tm_weight *w) {
    if (!w || !w->aux) return;
    tm_mm_weight *pw = w->aux;
    if (pw->chunk) {
        pw->chunk->live--;
        tm_mm_chunk_release(pw->chunk);
    }
    free(pw);
    memset(w, 0, sizeof(*w));
}

void tm_cpu_weight_row(const tm_weight *w, int64_t r, float *out) {
    const tm_mm_weight *pw = w->aux;
    const int64_t row_bytes = tm_dtype_row_bytes(w->dtype, w->n_cols);
    tm_dequantize_row(w->dtype, (const uint8_t *)pw->src + r * row_bytes, out, w->n_cols);
}

/* ---- driver ---------------------------------------------------------------------- */

enum { TM_MM_MAX_FUSED = 4 };        /* weights one job can share */
enum { TM_MM_CHUNKS_PER_SLICE = 16 }; /* claims a thread's slice is cut into (finer: a shorter tail) */

/* The kernels for dtype t on mm's level: its table's entry, or the scalar reference's
 * where the table has none (a type not yet given to that ISA: its weights stay unpacked). */
static const tm_mm_type *tm_mm_entry(const tm_cpu_matmul *mm, tm_dtype t) {
    const tm_mm_type *e = tm_mm_kernels_type(mm->k, t);
    return e ? e : tm_mm_kernels_type(tm_mm_kernels_scalar(), t);
}

/* Does w run the tile kernel of e (packed in e's layout), rather than its row kernel? */
static int tm_mm_uses_tiles(const tm_mm_type *e, const tm_weight *w) {
    const tm_mm_weight *pw = w->aux;
    return e->pack && pw->pack == e->pack;
}

typedef struct {
    const tm_mm_args *a;     /* (n_w) one per weight; all share dtype, n_cols, x and act */
    int n_w;
    const tm_mm_kernels *k;  /* the level's table: its activation quantizers */
    const tm_mm_type *e;     /* the kernels of the weights' dtype */
    int use_tiles;           /* 1: e->tiles on packed tiles; 0: e->rows on the GGUF blocks */
    tm_mm_slice *slices;     /* (nth) each thread's slice of the units */
    int64_t chunk;           /* units per claim */
    int prepare;             /* 1: the threads first quantize their share of the activations */
    tm_pool_barrier *prepared; /* ... and meet here before computing */
    uint8_t *group_scales;     /* non-NULL: each thread then copies the scales grouped here */
    size_t group_scales_bytes; /* ... this many bytes per thread */
} tm_mm_job;

/* Activations are prepared in column units: one column (f32), one Q8 block (32) or one
 * Q8_K superblock (256). */
static int64_t tm_mm_prep_unit(tm_mm_act_kind act) {
    return act == TM_MM_ACT_F32 ? 1 : act == TM_MM_ACT_Q8K ? TM_QK_K : TM_QK;
}

/* Prepares units [u0, u1) of token t0 + i of the group [t0, t0 + nt) (see matmul_impl.h). */
static void tm_mm_prepare_token(const tm_mm_job *job, const tm_mm_args *a, int t0, int nt, int i,
                                int64_t u0, int64_t u1) {
    const int64_t nb = a->n_cols / TM_QK, cols = a->n_cols;
    const int t = t0 + i;
    const float *x = a->x + (int64_t)t * cols;
    switch (job->e->act) {
    case TM_MM_ACT_F32: { /* interleave the group's tokens: xp[k * nt + i] */
        float *xp = a->act->xp + (int64_t)t0 * cols + i;
        for (int64_t k = u0; k < u1; k++) xp[k * nt] = x[k];
        return;
    }
    case TM_MM_ACT_Q8K: {
        tm_block_q8_k *y = (tm_block_q8_k *)a->act->q8k + (int64_t)t * (cols / TM_QK_K);
        job->k->quantize_q8k(x + u0 * TM_QK_K, y + u0, u1 - u0);
        return;
    }
    case TM_MM_ACT_Q8: {
        int8_t *q = a->act->q + (int64_t)t0 * cols + (int64_t)i * TM_QK + u0 * nt * TM_QK;
        const int64_t si = (int64_t)t * nb + u0; /* scales: row-major (matmul_impl.h) */
        job->k->quantize_q8(x + u0 * TM_QK, (u1 - u0) * TM_QK, nt, q, a->act->d + si, a->act->sum + si,
                            a->act->s + si);
        return;
    }
    case TM_MM_ACT_NONE:
        return;
    }
}

/* Units [u0, u1) of tokens [t_lo, t_hi). */
static void tm_mm_prepare(const tm_mm_job *job, int t_lo, int t_hi, int64_t u0, int64_t u1) {
    const tm_mm_args *a = &job->a[0];
    if (u0 >= u1) return;
    for (int t0 = 0; t0 < t_hi;) {
        const int nt = tm_mm_group_size(a->max_nt, a->n - t0);
        for (int i = TM_MAX(0, t_lo - t0); i < nt && t0 + i < t_hi; i++) tm_mm_prepare_token(job, a, t0, nt, i, u0, u1);
        t0 += nt;
    }
}

static void tm_mm_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* Quantized types: thread ith quantizes tokens [n * ith / nth, n * (ith + 1) / nth), the
 * rows the elementwise ops before a matmul (rmsnorm, silu, add) wrote on that thread, so
 * it reads them from its own cache; the grouped quants and row-major scales of different
 * tokens share no cache line. Dense weights interleave tokens per column (xp), so there
 * the threads split the columns. */
static void tm_mm_quantize_job(void *ctx, int ith, int nth) {
    const tm_mm_job *job = ctx;
    int64_t lo, hi;
    const tm_mm_args *a = &job->a[0];
    const int64_t units = a->n_cols / tm_mm_prep_unit(job->e->act);
    if (job->e->act == TM_MM_ACT_F32) {
        tm_mm_split(units, ith, nth, &lo, &hi);
        tm_mm_prepare(job, 0, a->n, lo, hi);
    } else {
        tm_mm_split(a->n, ith, nth, &lo, &hi);
        tm_mm_prepare(job, (int)lo, (int)hi, 0, units);
    }
}

/* Bytes of one thread's grouped copy of the scales of n tokens: d, then s or sum. */
static size_t tm_mm_group_scales_bytes(int64_t n_cols, int n) {
    return 2 * tm_mm_pad64((size_t)n * (size_t)(n_cols / TM_QK) * 4);
}

/* dst = src plus gd and, as the dtype's kernels need them, gs (Q4_1, Q5_1) or gsum (Q4_0,
 * Q5_0, Q8_0): the scales of src copied into buf in the quants' grouped order. Each thread
 * makes its own after the quantization barrier, so the quantizing threads still write
 * only their own tokens' lines. */
static void tm_mm_group_scales(const tm_mm_args *a, const tm_mm_act *src, tm_mm_act *dst, uint8_t *buf) {
    const int64_t nb = a->nb;
    const size_t part = tm_mm_pad64((size_t)a->n * (size_t)nb * 4);
    const int with_s = a->dtype == TM_DTYPE_Q4_1 || a->dtype == TM_DTYPE_Q5_1;
    float *gd = (float *)buf, *gs = (float *)(buf + part);
    int32_t *gsum = (int32_t *)(buf + part); /* the same place: a dtype reads one of them */
    for (int t0 = 0; t0 < a->n;) {
        const int nt = tm_mm_group_size(a->max_nt, a->n - t0);
        for (int i = 0; i < nt; i++) {
            const int64_t r = (int64_t)(t0 + i) * nb, g = (int64_t)t0 * nb + i;
            for (int64_t b = 0; b < nb; b++) gd[g + b * nt] = src->d[r + b];
            if (with_s)
                for (int64_t b = 0; b < nb; b++) gs[g + b * nt] = src->s[r + b];
            else
                for (int64_t b = 0; b < nb; b++) gsum[g + b * nt] = src->sum[r + b];
        }
        t0 += nt;
    }
    *dst = *src;
    dst->gd = gd;
    dst->gs = with_s ? gs : NULL;
    dst->gsum = with_s ? NULL : gsum;
}

/* Units of work: tiles (or rows) of all the job's weights, end to end; each thread takes
 * an equal slice of that sequence (all weights share n_cols, so units cost the same). */
static int64_t tm_mm_units(const tm_mm_job *job, const tm_mm_args *a) {
    return job->use_tiles ? a->w->n_tiles : a->n_rows;
}

/* Units [lo, hi) of the job's unit sequence; args: the job's, or a thread's copies. */
static void tm_mm_compute_units(const tm_mm_job *job, const tm_mm_args *args, int64_t lo, int64_t hi) {
    int64_t base = 0;
    for (int k = 0; k < job->n_w && lo < hi; k++) {
        const tm_mm_args *a = &args[k];
        const int64_t units = tm_mm_units(job, a);
        const int64_t u0 = TM_MAX(lo, base) - base, u1 = TM_MIN(hi, base + units) - base;
        base += units;
        if (u0 >= u1) continue;
        if (job->use_tiles) job->e->tiles(a, u0, u1);
        else job->e->rows(a, u0, u1);
    }
}

/* Each thread works through its own slice in order (one stream of weights, the same
 * tiles on the same core every call), then takes the unclaimed chunks of the others'
 * slices: a thread the machine slows down (other processes, a late wake-up) no longer
 * holds the rest up. Which thread computes a unit never changes its result. */
static void tm_mm_compute_job(void *ctx, int ith, int nth) {
    const tm_mm_job *job = ctx;
    if (job->prepare) {
        tm_mm_quantize_job(ctx, ith, nth);
        tm_pool_barrier_wait(job->prepared, nth);
    }
    const tm_mm_args *args = job->a;
    tm_mm_args own[TM_MM_MAX_FUSED];
    tm_mm_act own_act;
    if (job->group_scales) {
        tm_mm_group_scales(&job->a[0], job->a[0].act, &own_act,
                           job->group_scales + (size_t)ith * job->group_scales_bytes);
        for (int k = 0; k < job->n_w; k++) own[k] = job->a[k], own[k].act = &own_act;
        args = own;
    }
    for (int k = 0; k < nth; k++) {
        tm_mm_slice *sl = &job->slices[(ith + k) % nth];
        for (;;) {
            /* The owner claims half of what is left of its slice (at least a chunk), others
             * one chunk: fewer locked adds, each of which waits for the store buffer to
             * drain, and a tail as fine as before (bench/ab matmul A/B at 16 tokens:
             * new/old 0.986-0.991). */
            int64_t n = job->chunk;
            if (k == 0) n = TM_MAX(n, (sl->end - atomic_load_explicit(&sl->next, memory_order_relaxed)) / 2);
            const int64_t lo = atomic_fetch_add_explicit(&sl->next, n, memory_order_relaxed);
            if (lo >= sl->end) break;
            tm_mm_compute_units(job, args, lo, TM_MIN(lo + n, sl->end));
        }
    }
}

static void tm_mm_parallel(tm_cpu_matmul *mm, tm_pool_fn fn, tm_mm_job *job) {
    if (mm->pool) tm_threadpool_run(mm->pool, fn, job);
    else fn(job, 0, 1);
}

/* Carves the activations of kind `act` for n tokens from the scratch, growing it if
 * needed, and after them `extra` bytes (returned in *extra_at). */
static int tm_mm_scratch(tm_cpu_matmul *mm, tm_mm_act *act, tm_mm_act_kind kind, int64_t n_cols, int n,
                         size_t extra, uint8_t **extra_at) {
    const size_t nb = (size_t)(n_cols / TM_QK), nt = (size_t)n;
    size_t need;
    if (kind == TM_MM_ACT_F32)
        need = nt * (size_t)n_cols * sizeof(float);
    else if (kind == TM_MM_ACT_Q8K)
        need = nt * (size_t)(n_cols / TM_QK_K) * sizeof(tm_block_q8_k);
    else
        need = tm_mm_pad64(nt * (size_t)n_cols) + 3 * tm_mm_pad64(nt * nb * 4);
    const size_t base = need;
    need += extra;
    if (need > mm->scratch_bytes) {
        void *p = tm_mm_aligned_alloc(need);
        if (!p) return TM_ENOMEM;
        free(mm->scratch);
        mm->scratch = p;
        mm->scratch_bytes = need;
    }
    uint8_t *p = mm->scratch;
    *extra_at = p + base;
    memset(act, 0, sizeof(*act));
    if (kind == TM_MM_ACT_F32) {
        act->xp = (float *)p;
        return TM_OK;
    }
    if (kind == TM_MM_ACT_Q8K) {
        act->q8k = p;
        return TM_OK;
    }
    act->q = (int8_t *)p, p += tm_mm_pad64(nt * (size_t)n_cols);
    act->d = (float *)p, p += tm_mm_pad64(nt * nb * 4);
    act->sum = (int32_t *)p, p += tm_mm_pad64(nt * nb * 4);
    act->s = (float *)p;
    return TM_OK;
}

/* Runs outs[k] = x @ ws[k]^T (+ biases[k]) for weights that share dtype, n_cols and
 * kernel path: the activations are prepared once and all tiles form one job. */
static void tm_mm_run_fused(tm_cpu_matmul *mm, int n_w, float *const outs[], const float *x,
                            const tm_weight *const ws[], const float *const biases[], int n) {
    assert(n_w >= 1 && n_w <= TM_MM_MAX_FUSED);
    const tm_weight *w0 = ws[0];
    const tm_mm_type *e = tm_mm_entry(mm, w0->dtype);
    const int use_tiles = tm_mm_uses_tiles(e, w0);
    /* Dense weights need no preparation on the row kernels, nor for one token on tiles
     * (a group of one is x itself). */
    const int prepare = e->act != TM_MM_ACT_F32 || (use_tiles && n >= 2);
    const int group_scales = use_tiles && n >= TM_MM_GROUP_SCALES_MIN_NT && e->group_scales;
    tm_mm_act act;
    tm_mm_args a[TM_MM_MAX_FUSED];
    for (int k = 0; k < n_w; k++)
        a[k] = (tm_mm_args){
            .dtype = w0->dtype, .n_rows = ws[k]->n_rows, .n_cols = w0->n_cols, .nb = w0->n_cols / TM_QK,
            .w = ws[k]->aux, .x = x, .act = prepare ? &act : NULL, .bias = biases ? biases[k] : NULL,
            .out = outs[k], .n = n, .max_nt = use_tiles ? mm->k->max_nt : 1,
        };
    tm_mm_job job = {.a = a, .n_w = n_w, .k = mm->k, .e = e, .use_tiles = use_tiles, .slices = mm->slices};
    const int nth = mm->pool ? tm_threadpool_size(mm->pool) : 1;
    {
        int64_t total = 0;
        for (int k = 0; k < n_w; k++) total += tm_mm_units(&job, &a[k]);
        job.chunk = TM_MAX(1, total / (TM_MM_CHUNKS_PER_SLICE * nth));
        for (int i = 0; i < nth; i++) {
            int64_t lo, hi;
            tm_mm_split(total, i, nth, &lo, &hi);
            atomic_store_explicit(&mm->slices[i].next, lo, memory_order_relaxed);
            mm->slices[i].end = hi;
        }
    }
    if (group_scales) job.group_scales_bytes = tm_mm_group_scales_bytes(w0->n_cols, n);
    if (prepare) {
        uint8_t *extra;
        if (tm_mm_scratch(mm, &act, e->act, w0->n_cols, n, (size_t)nth * job.group_scales_bytes, &extra)) {
            /* No memory for the scratch: poison rather than return stale data. */
            for (int k = 0; k < n_w; k++)
                for (int64_t i = 0; i < (int64_t)n * ws[k]->n_rows; i++) outs[k][i] = NAN;
            TM_ERRORF("cpu matmul: out of memory for %d activation rows", n);
            return;
        }
        /* A few tokens are cheaper to quantize here than to split; more are split over
         * the threads at the start of the compute run. */
        if (n < 4) tm_mm_prepare(&job, 0, n, 0, w0->n_cols / tm_mm_prep_unit(e->act));
        else job.prepare = 1;
        if (group_scales) job.group_scales = extra;
    }
    tm_pool_barrier prepared = {0};
    job.prepared = &prepared;
    tm_mm_parallel(mm, tm_mm_compute_job, &job);
}

void tm_cpu_matmul_run(tm_cpu_matmul *mm, float *out, const float *x, const tm_weight *w,
                       const float *bias, int n) {
    if (n <= 0) return;
    tm_mm_run_fused(mm, 1, &out, x, &w, &bias, n);
}

void tm_cpu_matmul_run_multi(tm_cpu_matmul *mm, int n_w, float *const outs[], const float *x,
                             const tm_weight *const ws[], const float *const biases[], int n) {
    if (n <= 0) return;
    for (int k0 = 0; k0 < n_w;) {
        /* the longest run of weights from k0 that can share one job */
        const tm_weight *w0 = ws[k0];
        const tm_mm_type *e = tm_mm_entry(mm, w0->dtype);
        const int tiles0 = tm_mm_uses_tiles(e, w0);
        int k1 = k0 + 1;
        while (k1 < n_w && k1 - k0 < TM_MM_MAX_FUSED && ws[k1]->dtype == w0->dtype && ws[k1]->n_cols == w0->n_cols &&
               tm_mm_uses_tiles(e, ws[k1]) == tiles0)
            k1++;
        tm_mm_run_fused(mm, k1 - k0, outs + k0, x, ws + k0, biases ? biases + k0 : NULL, n);
        k0 = k1;
    }
}
