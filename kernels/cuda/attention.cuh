/* attention.cuh - paged attention for a ragged batch of decodes and prefill chunks
 * (tm_backend.attention's semantics, kernels/backend.h), on the device KV pool of
 * backend_cuda.cuh. The kernels are in attention_kernels.cuh; this file plans and
 * launches them.
 *
 * Plan (on the host, once per batch step, reused by every layer): each sequence's rows
 * (new tokens x query heads of a kv head's group) are cut into row tiles, 16 rows for a
 * sequence with at most 16 (a decode, or a few tokens: the decode kernel, whose warps
 * split the keys) and 64 otherwise (the prefill kernel, whose warps split the rows). A
 * tile sees keys [0, pos of its last token]. When the tiles x kv heads cannot fill the
 * GPU (blocks per SM x SMs), each one's keys are split into equal chunks of at least
 * TM_ATTN_MIN_SPLIT keys (flash-decoding; FlashInfer picks its chunk the same way), the
 * splits write unnormalized partials and a third small kernel merges them by
 * log-sum-exp. Items go longest first, so the long ones do not finish last.
 *
 * Launches per layer: decode items, prefill items, merge (each only when it has work).
 * The item list is uploaded once per step from pinned memory, ordered on the stream. */
#ifndef TM_CUDA_ATTENTION_CUH
#define TM_CUDA_ATTENTION_CUH

#include <string.h>

#include <algorithm>

#include "kernels/cuda/attention_kernels.cuh"

extern "C" {
#include "common/common.h"
}

enum {
    TM_ATTN_MIN_SPLIT = 256,   /* keys per split at least: below this the merge costs more than it gains */
    TM_ATTN_DEC_ROWS = 16,     /* rows of a decode item (one m16 tile) */
    TM_ATTN_MAX_HEAD_DIM = 256 /* the largest tile the kernels have */
};

/* Tile shapes per head-dim capacity: decode (1 x WK warps) and prefill (4 x 1 warps).
 * Head dim 256 takes 32-key tiles so that two stages fit in 99 KiB (sm_89's limit). */
template <int DP>
struct tm_attn_cfgs;
template <>
struct tm_attn_cfgs<64> {
    typedef tm_attn_cfg<64, 1, 4, 64> dec;
    typedef tm_attn_cfg<64, 4, 1, 64> pre;
};
template <>
struct tm_attn_cfgs<128> {
    typedef tm_attn_cfg<128, 1, 4, 64> dec;
    typedef tm_attn_cfg<128, 4, 1, 64> pre;
};
template <>
struct tm_attn_cfgs<256> {
    typedef tm_attn_cfg<256, 1, 2, 32> dec;
    typedef tm_attn_cfg<256, 4, 1, 32> pre;
};

/* Per-backend attention state: the step's plan. Zero-initialized is empty; free with
 * tm_cuda_attn_state_free. Engine thread only. */
typedef struct tm_cuda_attn_state {
    int valid;                        /* a plan is built, for: */
    uint64_t step;                    /* this tm_cuda_batch.step (and its token and */
    int n_tokens, n_seqs;             /* sequence counts, a cheap guard against a stale step) */
    int n_heads, n_kv_heads, head_dim; /* these shapes */
    int n_sm;                         /* and this device */
    int n_dec, n_pre, n_merge;        /* decode items, prefill items, merge groups */
    size_t n_part_rows;               /* partial rows the split items write */
    tm_attn_item *host;               /* pinned (cap) bytes: decode items, prefill items, merges */
    void *dev;                        /* device copy of host */
    size_t cap;                       /* bytes of host and dev */
    cudaEvent_t uploaded;             /* recorded after the upload: host is free again */
    int has_event;                    /* uploaded was created */
} tm_cuda_attn_state;

static void tm_cuda_attn_state_free(tm_cuda_attn_state *s) {
    if (s->has_event) {
        cudaEventSynchronize(s->uploaded);
        cudaEventDestroy(s->uploaded);
    }
    if (s->host) cudaFreeHost(s->host);
    if (s->dev) cudaFree(s->dev);
    memset(s, 0, sizeof *s);
}

/* Whether tm_cuda_attention takes this cache shape on this device: 0, or TM_EUNSUPPORTED
 * with a message (for kv_create to refuse). Head dims 64, 128 and 256 have exact tiles;
 * any other even head dim up to 256 runs zero-padded to the next of them. */
static int tm_cuda_attention_supports(const tm_cuda_ctx *ctx, const tm_kv_shape *s, char *err, size_t err_len) {
    if (s->dtype != TM_KV_F16)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "CUDA attention: KV cache dtype %s is not supported (f16 only)",
                       tm_kv_dtype_name(s->dtype) ? tm_kv_dtype_name(s->dtype) : "?");
    if (s->head_dim < 2 || s->head_dim > TM_ATTN_MAX_HEAD_DIM || s->head_dim % 2)
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "CUDA attention: head_dim %d is not supported (even, 2..%d)", s->head_dim,
                       (int)TM_ATTN_MAX_HEAD_DIM);
    if (s->block_size < 1 || s->n_kv_heads < 1)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "CUDA attention: bad cache shape (block_size %d, kv heads %d)",
                       s->block_size, s->n_kv_heads);
    size_t need = s->head_dim <= 64    ? tm_attn_cfgs<64>::pre::SMEM
                  : s->head_dim <= 128 ? tm_attn_cfgs<128>::pre::SMEM
                                       : std::max(tm_attn_cfgs<256>::pre::SMEM, tm_attn_cfgs<256>::dec::SMEM);
    if (need > ctx->max_smem)
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "CUDA attention: head_dim %d needs %zu bytes of shared memory per block, the device allows %zu",
                       s->head_dim, need, ctx->max_smem);
    return 0;
}

/* Blocks of smem_bytes that one SM holds at once (an estimate from shared memory alone;
 * registers allow at least 2 of these 128-thread blocks). */
static int tm_attn_blocks_per_sm(const tm_cuda_ctx *ctx, size_t smem_bytes) {
    size_t n = (ctx->max_smem + 1024) / (smem_bytes + 1024);
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

/* Calls fn(kind, seq, r0, n_rows, n_keys) for every row tile of the batch; kind 0 is
 * decode (16-row tiles), 1 prefill (64). */
template <class F>
static void tm_attn_each_tile(const tm_batch *b, int group, F fn) {
    for (int s = 0; s < b->n_seqs; s++) {
        const int t0 = b->seq_start[s], n_tok = b->seq_start[s + 1] - t0;
        const int rows = n_tok * group;
        const int kind = rows <= TM_ATTN_DEC_ROWS ? 0 : 1;
        const int br = kind == 0 ? TM_ATTN_DEC_ROWS : 64;
        for (int r0 = 0; r0 < rows; r0 += br) {
            const int n_rows = std::min(br, rows - r0);
            fn(kind, s, r0, n_rows, b->pos[t0 + (r0 + n_rows - 1) / group] + 1);
        }
    }
}

/* Builds the step's plan into st and uploads it. bc[kind]: keys per tile; target[kind]:
 * blocks that fill the GPU. */
static cudaError_t tm_attn_plan(const tm_cuda_ctx *ctx, tm_cuda_attn_state *st, const tm_cuda_batch *cb,
                                int n_heads, int n_kvh, int head_dim, const int bc[2], const int target[2]) {
    const tm_batch *b = cb->host;
    const int group = n_heads / n_kvh;

    /* chunk (in tiles) per kind: unbounded while the unsplit items fill the GPU */
    int64_t n_base[2] = {0, 0}, work[2] = {0, 0};
    tm_attn_each_tile(b, group, [&](int kind, int, int, int, int n_keys) {
        n_base[kind] += n_kvh;
        work[kind] += (int64_t)n_kvh * tm_cdiv(n_keys, bc[kind]);
    });
    int64_t chunk[2];
    for (int k = 0; k < 2; k++) {
        const int64_t min_chunk = tm_cdiv(TM_ATTN_MIN_SPLIT, bc[k]);
        chunk[k] = n_base[k] >= target[k] ? INT64_MAX : std::max(min_chunk, (int64_t)tm_cdiv(work[k], target[k]));
    }
    /* splits of a tile with n_tiles tiles, and tiles per split (equal but the last) */
    auto splits = [&](int kind, int n_tiles, int *per) {
        const int64_t n = n_tiles <= chunk[kind] ? 1 : (n_tiles + chunk[kind] - 1) / chunk[kind];
        *per = (int)tm_cdiv(n_tiles, n);
        return (int)tm_cdiv(n_tiles, *per);
    };

    int n_items[2] = {0, 0}, n_merge = 0;
    tm_attn_each_tile(b, group, [&](int kind, int, int, int, int n_keys) {
        int per, n = splits(kind, tm_cdiv(n_keys, bc[kind]), &per);
        n_items[kind] += n_kvh * n;
        if (n > 1) n_merge += n_kvh;
    });
    const size_t need = (size_t)(n_items[0] + n_items[1]) * sizeof(tm_attn_item) + (size_t)n_merge * sizeof(tm_attn_merge);

    /* the previous step's upload has long finished; wait anyway before reusing host */
    if (st->has_event) CUDA_TRY(cudaEventSynchronize(st->uploaded));
    else {
        CUDA_TRY(cudaEventCreateWithFlags(&st->uploaded, cudaEventDisableTiming));
        st->has_event = 1;
    }
    if (need > st->cap) {
        CUDA_TRY(cudaStreamSynchronize(ctx->stream)); /* earlier layers' kernels may read dev */
        if (st->host) CUDA_TRY(cudaFreeHost(st->host));
        if (st->dev) CUDA_TRY(cudaFree(st->dev));
        st->host = NULL;
        st->dev = NULL;
        st->cap = 0;
        size_t cap = std::max(need + need / 2, (size_t)4096);
        CUDA_TRY(cudaMallocHost((void **)&st->host, cap));
        CUDA_TRY(cudaMalloc(&st->dev, cap));
        st->cap = cap;
    }

    tm_attn_item *items[2] = {st->host, st->host + n_items[0]};
    tm_attn_merge *merges = reinterpret_cast<tm_attn_merge *>(st->host + n_items[0] + n_items[1]);
    int ni[2] = {0, 0}, nm = 0;
    size_t part = 0;
    tm_attn_each_tile(b, group, [&](int kind, int s, int r0, int n_rows, int n_keys) {
        const int bck = bc[kind];
        int per, n = splits(kind, tm_cdiv(n_keys, bck), &per);
        for (int h = 0; h < n_kvh; h++) {
            if (n > 1) merges[nm++] = tm_attn_merge{s, h, r0, n_rows, n, (int32_t)part, {0, 0}};
            for (int i = 0; i < n; i++) {
                const int kb = i * per * bck, ke = std::min((i + 1) * per * bck, n_keys);
                items[kind][ni[kind]++] = tm_attn_item{s, h, r0, n_rows, kb, ke, n > 1 ? (int32_t)part : -1, 0};
                if (n > 1) part += n_rows;
            }
        }
    });
    /* longest first: a block that starts last should not be the one that runs longest */
    for (int k = 0; k < 2; k++)
        std::stable_sort(items[k], items[k] + n_items[k], [](const tm_attn_item &x, const tm_attn_item &y) {
            return (int64_t)(x.ke - x.kb) * x.n_rows > (int64_t)(y.ke - y.kb) * y.n_rows;
        });

    if (need) CUDA_TRY(cudaMemcpyAsync(st->dev, st->host, need, cudaMemcpyHostToDevice, ctx->stream));
    CUDA_TRY(cudaEventRecord(st->uploaded, ctx->stream));
    st->valid = 1;
    st->step = cb->step;
    st->n_tokens = b->n_tokens;
    st->n_seqs = b->n_seqs;
    st->n_heads = n_heads;
    st->n_kv_heads = n_kvh;
    st->head_dim = head_dim;
    st->n_sm = ctx->n_sm;
    st->n_dec = n_items[0];
    st->n_pre = n_items[1];
    st->n_merge = n_merge;
    st->n_part_rows = part;
    return cudaSuccess;
}

template <class C, bool EXACT>
static cudaError_t tm_attn_launch(const tm_cuda_ctx *ctx, const tm_attn_params &p, const tm_attn_item *items, int n) {
    if (n == 0) return cudaSuccess;
    if (C::SMEM > ctx->max_smem) CUDA_TRY(cudaErrorInvalidConfiguration);
    if (C::SMEM > 48 * 1024) {
        static unsigned opted_in = 0; /* devices done, for this kernel instance */
        CUDA_TRY(tm_cuda_smem_opt_in(ctx, reinterpret_cast<const void *>(&tm_attn_kernel<C, EXACT>), C::SMEM,
                                     &opted_in));
    }
    CUDA_TRY(TM_LAUNCH((tm_attn_kernel<C, EXACT>), n, C::NT, C::SMEM, ctx->stream, p, items));
    return cudaSuccess;
}

template <int DP>
static cudaError_t tm_attn_run(const tm_cuda_ctx *ctx, tm_cuda_attn_state *st, float *out, const float *q,
                               const struct tm_kv_cache *kv, int layer, const tm_cuda_batch *b, int n_heads,
                               float scale, int window, float softcap) {
    typedef typename tm_attn_cfgs<DP>::dec Dec;
    typedef typename tm_attn_cfgs<DP>::pre Pre;
    const tm_kv_shape *s = &kv->shape;
    if (!st->valid || st->step != b->step || st->n_tokens != b->host->n_tokens || st->n_seqs != b->host->n_seqs ||
        st->n_heads != n_heads || st->n_kv_heads != s->n_kv_heads ||
        st->head_dim != s->head_dim || st->n_sm != ctx->n_sm) {
        const int bc[2] = {Dec::BC, Pre::BC};
        const int target[2] = {ctx->n_sm * tm_attn_blocks_per_sm(ctx, Dec::SMEM),
                               ctx->n_sm * tm_attn_blocks_per_sm(ctx, Pre::SMEM)};
        st->valid = 0;
        CUDA_TRY(tm_attn_plan(ctx, st, b, n_heads, s->n_kv_heads, s->head_dim, bc, target));
    }
    void *scratch = NULL;
    if (st->n_part_rows)
        CUDA_TRY(tm_cuda_scratch_get(ctx, st->n_part_rows * (s->head_dim + 2) * sizeof(float), &scratch));
    float *part = (float *)scratch;
    const size_t layer_off = tm_cuda_kv_layer_offset(s, layer);
    tm_attn_params p;
    p.out = out;
    p.q = q;
    p.k = kv->k + layer_off;
    p.v = kv->v + layer_off;
    p.pos = b->pos;
    p.seq_start = b->seq_start;
    p.block_table = b->block_table;
    p.max_blocks = b->host->max_blocks;
    p.part_o = part;
    p.part_ml = part ? part + st->n_part_rows * s->head_dim : NULL;
    p.n_heads = n_heads;
    p.n_kv_heads = s->n_kv_heads;
    p.group = n_heads / s->n_kv_heads;
    p.head_dim = s->head_dim;
    p.block_size = s->block_size;
    p.scale_log2 = scale * 1.4426950408889634f;
    p.window = window > 0 ? window : 0;
    p.cap_k = softcap > 0.0f ? scale / softcap : 0.0f;
    p.cap_log2 = softcap > 0.0f ? softcap * 1.4426950408889634f : 0.0f;

    const tm_attn_item *dec = (const tm_attn_item *)st->dev, *pre = dec + st->n_dec;
    if (s->head_dim == DP) {
        CUDA_TRY((tm_attn_launch<Dec, true>(ctx, p, dec, st->n_dec)));
        CUDA_TRY((tm_attn_launch<Pre, true>(ctx, p, pre, st->n_pre)));
    } else {
        CUDA_TRY((tm_attn_launch<Dec, false>(ctx, p, dec, st->n_dec)));
        CUDA_TRY((tm_attn_launch<Pre, false>(ctx, p, pre, st->n_pre)));
    }
    if (st->n_merge)
        CUDA_TRY(TM_LAUNCH(tm_attn_merge_kernel, st->n_merge, 128, 0, ctx->stream, p,
                           (const tm_attn_merge *)(pre + st->n_pre)));
    return cudaSuccess;
}

/* out (n_tokens, n_heads, head_dim) f32 from q (same) f32 against layer's pages, for the
 * ragged batch b: tm_backend.attention's semantics (kernels/backend.h), window and softcap
 * included. Plans on the first call of a step (b->step) and reuses the plan for every
 * layer: the plan covers every key, and a sliding-window layer's blocks skip the tiles
 * before their window (attention_kernels.cuh). Device pointers; ordered on ctx->stream.
 * Fails with cudaErrorInvalidValue for a shape tm_cuda_attention_supports refuses or
 * n_heads not a multiple of the kv heads. */
static cudaError_t tm_cuda_attention(const tm_cuda_ctx *ctx, tm_cuda_attn_state *st, float *out, const float *q,
                                     const struct tm_kv_cache *kv, int layer, const tm_cuda_batch *b, int n_heads,
                                     float scale, int window, float softcap) {
    const tm_kv_shape *s = &kv->shape;
    if (b->host->n_tokens == 0) return cudaSuccess;
    if (n_heads < 1 || s->n_kv_heads < 1 || n_heads % s->n_kv_heads || layer < 0 || layer >= s->n_layers ||
        s->dtype != TM_KV_F16 || s->head_dim < 2 || s->head_dim > TM_ATTN_MAX_HEAD_DIM || s->head_dim % 2 ||
        s->block_size < 1)
        CUDA_TRY(cudaErrorInvalidValue);
    if (s->head_dim <= 64) return tm_attn_run<64>(ctx, st, out, q, kv, layer, b, n_heads, scale, window, softcap);
    if (s->head_dim <= 128) return tm_attn_run<128>(ctx, st, out, q, kv, layer, b, n_heads, scale, window, softcap);
    return tm_attn_run<256>(ctx, st, out, q, kv, layer, b, n_heads, scale, window, softcap);
}

#endif
