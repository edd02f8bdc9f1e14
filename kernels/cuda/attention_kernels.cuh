/* attention_kernels.cuh - the kernels of paged attention (attention.cuh plans and launches
 * them).
 *
 * One kernel template serves decodes and prefill chunks. A block runs one work item: one
 * sequence, one kv head, a tile of "rows" and a range of keys. Rows pack the query heads
 * of the GQA group with the sequence's new tokens: row R of a sequence is token
 * seq_start + R / G, query head kvh * G + R % G (G = n_heads / n_kv_heads). So every K/V
 * tile that reaches shared memory serves all query heads of its group (FlashInfer's
 * sharing, and FlashAttention's "group as the M dimension" for decode), and a prefill
 * chunk's tokens share it too.
 *
 * Warps: WM x WK. The WM warps of a key column each own 16 rows (FlashAttention-2: no
 * warp needs another's softmax state); the WK warps of a row slice each take BC / WK keys
 * of every tile and are merged by log-sum-exp at the end. Prefill: WM = 4, WK = 1 (64
 * rows). Decode (at most 16 rows): WM = 1, WK = 4 (or 2), so four warps read a tile's
 * keys in parallel and the group's heads share each.
 *
 * Per tile (FlashAttention-2), in the log2 domain (scores times scale * log2 e):
 *   S = Q K^T (mma.m16n8k16, f16 in, f32 out), masked where key >= lim(row);
 *   m' = max(m, rowmax S); alpha = 2^(m - m'); l = l alpha + rowsum 2^(S - m');
 *   O = O alpha + P V with P = 2^(S - m') rounded to f16.
 * A row max of -inf (nothing visible yet) is used as 0, so no -inf - -inf arises.
 *
 * Masking: lim(row) = min(pos[token] + 1, item key end), and with a sliding window keys
 * before first(row) = pos[token] - window + 1 are masked too; a block starts at the tile
 * holding its first row's first key (rows ascend), and a warp skips a tile below every
 * one of its rows' windows. With soft-capping (Gemma 2) a score s becomes
 * softcap * tanh(s * scale / softcap) before the log2 scaling. Keys at or past the item's end
 * are never read from the pool: their K and V rows in shared memory are zero-filled, so
 * garbage or NaN beyond ctx_len cannot reach the output (P is exactly 0 there and V is 0,
 * and 0 * NaN never happens).
 *
 * Shared memory: Q (BR x DP) f16, then STAGES stages of K (BC x DP) and V (BC x DP) f16,
 * filled by cp.async one tile ahead of the MMAs. Rows are DP halves with the 16-byte
 * chunks XOR-swizzled by row % 8, so the 8 row addresses of every ldmatrix fall in 8
 * different bank groups without padding.
 *
 * Head dims: DP is 64, 128 or 256. EXACT: head_dim == DP, the fast path. Otherwise
 * (any even head_dim up to 256) the tile is zero-padded to DP columns and rows that are
 * not 16-byte aligned are copied 4 bytes at a time: the same MMAs, slower loads. */
#ifndef TM_CUDA_ATTENTION_KERNELS_CUH
#define TM_CUDA_ATTENTION_KERNELS_CUH

#include "kernels/cuda/backend_cuda.cuh"

/* One block's work (device, uploaded once per step by attention.cuh's plan). */
typedef struct tm_attn_item {
    int32_t seq;    /* sequence index in the batch */
    int32_t kvh;    /* kv head */
    int32_t r0;     /* first row of the tile (row R: token seq_start + R / G, head kvh * G + R % G) */
    int32_t n_rows; /* rows in the tile, <= the kernel's BR */
    int32_t kb;     /* first key, a multiple of the kernel's BC */
    int32_t ke;     /* one past the last key (<= pos of the tile's last token + 1) */
    int32_t part;   /* -1: write out; else row r's partial goes to partial row part + r */
    int32_t pad;    /* 32 bytes per item */
} tm_attn_item;

/* One split (sequence, kv head, row tile) to merge: split s's partial of row r is partial
 * row part + s * n_rows + r. */
typedef struct tm_attn_merge {
    int32_t seq, kvh, r0, n_rows; /* as in tm_attn_item */
    int32_t n_splits;             /* partials per row */
    int32_t part;                 /* first partial row */
    int32_t pad[2];
} tm_attn_merge;

/* Operands every kernel of a call shares. */
typedef struct tm_attn_params {
    float *out;                 /* (n_tokens, n_heads, head_dim) f32 */
    const float *q;             /* (n_tokens, n_heads, head_dim) f32 */
    const __half *k;            /* layer's K pool (n_blocks, n_kv_heads, block_size, head_dim) f16 */
    const __half *v;            /* layer's V pool, same */
    const int32_t *pos;         /* (n_tokens) device */
    const int32_t *seq_start;   /* (n_seqs + 1) device */
    const int32_t *block_table; /* (n_seqs, max_blocks) device */
    int max_blocks;             /* row stride of block_table */
    float *part_o;              /* (partial rows, head_dim) f32 unnormalized split outputs */
    float *part_ml;             /* (partial rows, 2) f32: row max (log2 units), exp sum */
    int n_heads, n_kv_heads;    /* query heads, kv heads */
    int group;                  /* n_heads / n_kv_heads */
    int head_dim;               /* even, <= 256 */
    int block_size;             /* tokens per page */
    float scale_log2;           /* softmax scale * log2(e) */
    int window;                 /* > 0: a row sees keys pos - window + 1..pos only */
    float cap_k;                /* soft-capping: scale / softcap */
    float cap_log2;             /* softcap * log2(e); 0: no soft-capping */
} tm_attn_params;

/* Tile shape of one kernel instance. */
template <int DP_, int WM_, int WK_, int BC_>
struct tm_attn_cfg {
    static constexpr int DP = DP_;          /* head dim capacity (columns of every tile) */
    static constexpr int WM = WM_;          /* warps along rows, 16 rows each */
    static constexpr int WK = WK_;          /* warps along keys */
    static constexpr int BC = BC_;          /* keys per tile */
    static constexpr int NT = 32 * WM * WK; /* threads */
    static constexpr int BR = 16 * WM;      /* rows per block */
    static constexpr int KW = BC / WK;      /* keys per warp per tile */
    static constexpr int STAGES = 2;        /* K/V tiles in flight */
    static constexpr size_t Q_BYTES = (size_t)BR * DP * 2;
    static constexpr size_t KV_BYTES = (size_t)STAGES * 2 * BC * DP * 2;
    /* the WK > 1 merge reuses the K/V stages: (WK, 16, DP) o, then (WK, 16) m and l */
    static constexpr size_t RED_BYTES = WK > 1 ? (size_t)WK * 16 * (DP + 2) * 4 : 0;
    static constexpr size_t SMEM = Q_BYTES + (KV_BYTES > RED_BYTES ? KV_BYTES : RED_BYTES);
    static_assert(DP % 64 == 0 && DP <= 256, "the swizzle needs >= 8 chunks per row");
    static_assert(KW % 16 == 0, "P.V takes keys 16 at a time");
    static_assert(RED_BYTES <= KV_BYTES, "the merge fits where the tiles were");
};

/* Element offset of (row, 16-byte chunk ch) in a swizzled tile of DP-half rows. */
template <int DP>
__device__ __forceinline__ int tm_attn_swz(int row, int ch) {
    return row * DP + ((ch ^ (row & 7)) << 3);
}

__device__ __forceinline__ int tm_attn_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int tm_attn_imax(int a, int b) { return a > b ? a : b; }

__device__ __forceinline__ int tm_attn_warp_imin(int v) {
    for (int o = 16; o > 0; o >>= 1) v = tm_attn_imin(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int tm_attn_warp_imax(int v) {
    for (int o = 16; o > 0; o >>= 1) v = tm_attn_imax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Query tile -> shared memory as f16 (zero rows past n_rows and columns past head_dim). */
template <class C, bool EXACT>
__device__ __forceinline__ void tm_attn_load_q(__half *sq, const tm_attn_params &p, const tm_attn_item &it,
                                               int tok0) {
    constexpr int CPR = C::DP / 8;
    const int d = EXACT ? C::DP : p.head_dim;
    for (int c = threadIdx.x; c < C::BR * CPR; c += C::NT) {
        const int r = c / CPR, ch = c % CPR;
        uint32_t h[4] = {0u, 0u, 0u, 0u};
        if (r < it.n_rows && ch * 8 < d) {
            const int R = it.r0 + r;
            const int tok = tok0 + R / p.group, head = it.kvh * p.group + R % p.group;
            const float *src = p.q + ((size_t)tok * p.n_heads + head) * d + ch * 8;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (EXACT || ch * 8 + 2 * e < d) {
                    const float2 f = *reinterpret_cast<const float2 *>(src + 2 * e);
                    h[e] = tm_pack_half2(f.x, f.y);
                }
            }
        }
        *reinterpret_cast<uint4 *>(sq + tm_attn_swz<C::DP>(r, ch)) = make_uint4(h[0], h[1], h[2], h[3]);
    }
}

/* Keys [k0, k0 + BC) of the item's kv head -> one K and one V stage, through the block
 * table; keys at or past ke are zero rows (never read from the pool). */
template <class C, bool EXACT>
__device__ __forceinline__ void tm_attn_load_kv(__half *sk, __half *sv, const tm_attn_params &p,
                                                const int32_t *table, int kvh, int k0, int ke) {
    constexpr int CPR = C::DP / 8;
    const int d = EXACT ? C::DP : p.head_dim;
    const bool rows_aligned = EXACT || d % 8 == 0;
    for (int c = threadIdx.x; c < C::BC * CPR; c += C::NT) {
        const int row = c / CPR, ch = c % CPR, key = k0 + row;
        __half *dk = sk + tm_attn_swz<C::DP>(row, ch), *dv = sv + tm_attn_swz<C::DP>(row, ch);
        if (key < ke && ch * 8 < d) {
            const int page = __ldg(table + key / p.block_size);
            const size_t src = ((size_t)page * p.n_kv_heads + kvh) * p.block_size * d +
                               (size_t)(key % p.block_size) * d + ch * 8;
            if (rows_aligned && ch * 8 + 8 <= d) {
                tm_cp_async_16(dk, p.k + src);
                tm_cp_async_16(dv, p.v + src);
                continue;
            }
            /* generic head dims: 4-byte pieces (head_dim is even), zeros past head_dim */
            uint32_t hk[4] = {0u, 0u, 0u, 0u}, hv[4] = {0u, 0u, 0u, 0u};
            for (int e = 0; e < 4 && ch * 8 + 2 * e < d; e++) {
                hk[e] = *reinterpret_cast<const uint32_t *>(p.k + src + 2 * e);
                hv[e] = *reinterpret_cast<const uint32_t *>(p.v + src + 2 * e);
            }
            *reinterpret_cast<uint4 *>(dk) = make_uint4(hk[0], hk[1], hk[2], hk[3]);
            *reinterpret_cast<uint4 *>(dv) = make_uint4(hv[0], hv[1], hv[2], hv[3]);
        } else {
            *reinterpret_cast<uint4 *>(dk) = make_uint4(0u, 0u, 0u, 0u);
            *reinterpret_cast<uint4 *>(dv) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

/* One warp, one tile: its 16 rows against its KW keys starting at tile row kr (keys
 * kw0...). Updates the online-softmax state m, l (this lane's rows g and g + 8; l is the
 * lane's share, summed over the quad at the end) and o. */
template <class C>
__device__ __forceinline__ void tm_attn_warp_tile(const __half *sq, const __half *sk, const __half *sv, int qr,
                                                  int kr, int kw0, const int first[2], const int lim[2], bool mask,
                                                  const tm_attn_params &p, float m[2], float l[2],
                                                  float (&o)[C::DP / 8][4]) {
    constexpr int NJ = C::KW / 8; /* n-tiles of S */
    const int lane = threadIdx.x & 31, t = lane & 3, mi = lane >> 3, mr = lane & 7;
    float s[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;

    /* S = Q K^T: A from Q rows (ldmatrix, lane -> row lane % 16, chunk lane / 16); B from K
     * rows (matrix mi: keys +8 (mi / 2), d chunk +mi % 2) */
#pragma unroll
    for (int kk = 0; kk < C::DP / 16; kk++) {
        uint32_t a[4];
        const int qrow = qr + (lane & 15);
        tm_ldmatrix_x4(a, sq + tm_attn_swz<C::DP>(qrow, 2 * kk + (lane >> 4)));
#pragma unroll
        for (int jp = 0; jp < NJ / 2; jp++) {
            uint32_t b[4];
            const int krow = kr + 16 * jp + 8 * (mi >> 1) + mr;
            tm_ldmatrix_x4(b, sk + tm_attn_swz<C::DP>(krow, 2 * kk + (mi & 1)));
            tm_mma_m16n8k16_f16(s[2 * jp], a, b, s[2 * jp]);
            tm_mma_m16n8k16_f16(s[2 * jp + 1], a, b + 2, s[2 * jp + 1]);
        }
    }

    /* online softmax, rows g (hr 0) and g + 8 (hr 1) */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float x = p.cap_log2 > 0.0f ? p.cap_log2 * tanhf(s[j][2 * hr + e] * p.cap_k)
                                            : s[j][2 * hr + e] * p.scale_log2;
                const int key = kw0 + 8 * j + 2 * t + e;
                if (mask && (key >= lim[hr] || key < first[hr])) x = -INFINITY;
                s[j][2 * hr + e] = x;
                mx = fmaxf(mx, x);
            }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[hr], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = exp2f(m[hr] - m_use); /* m = -inf: 0, and o, l are still 0 */
        m[hr] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = exp2f(s[j][2 * hr + e] - m_use);
                s[j][2 * hr + e] = pe;
                sum += pe;
            }
        }
        l[hr] = l[hr] * alpha + sum;
#pragma unroll
        for (int j = 0; j < C::DP / 8; j++) {
            o[j][2 * hr] *= alpha;
            o[j][2 * hr + 1] *= alpha;
        }
    }

    /* O += P V: two C tiles of S are one A fragment of P; B from V rows transposed
     * (matrix mi: keys +8 (mi % 2), d chunk +mi / 2) */
#pragma unroll
    for (int kk = 0; kk < C::KW / 16; kk++) {
        uint32_t a[4];
        a[0] = tm_pack_half2(s[2 * kk][0], s[2 * kk][1]);
        a[1] = tm_pack_half2(s[2 * kk][2], s[2 * kk][3]);
        a[2] = tm_pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = tm_pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        const int vrow = kr + 16 * kk + 8 * (mi & 1) + mr;
#pragma unroll
        for (int jp = 0; jp < C::DP / 16; jp++) {
            uint32_t b[4];
            tm_ldmatrix_x4_trans(b, sv + tm_attn_swz<C::DP>(vrow, 2 * jp + (mi >> 1)));
            tm_mma_m16n8k16_f16(o[2 * jp], a, b, o[2 * jp]);
            tm_mma_m16n8k16_f16(o[2 * jp + 1], a, b + 2, o[2 * jp + 1]);
        }
    }
}

/* Where row r of the item goes: its row of out (normalized), or its partial row
 * (unnormalized o; m and l go to part_ml) when the item is one split of several. */
__device__ __forceinline__ float *tm_attn_row_dst(const tm_attn_params &p, const tm_attn_item &it, int tok0,
                                                  int r) {
    if (it.part >= 0) return p.part_o + (size_t)(it.part + r) * p.head_dim;
    const int R = it.r0 + r;
    const int tok = tok0 + R / p.group, head = it.kvh * p.group + R % p.group;
    return p.out + ((size_t)tok * p.n_heads + head) * p.head_dim;
}

template <class C, bool EXACT>
static __global__ void __launch_bounds__(C::NT) tm_attn_kernel(tm_attn_params p, const tm_attn_item *items) {
    const tm_attn_item it = items[blockIdx.x];
    __half *sq = tm_dyn_smem<__half>();
    __half *skv = sq + C::BR * C::DP; /* stage i: K at skv + 2 i BC DP, V after it */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp % C::WM, wk = warp / C::WM, g = lane >> 2, t = lane & 3;
    const int d = EXACT ? C::DP : p.head_dim;
    const int tok0 = p.seq_start[it.seq];
    const int32_t *table = p.block_table + (size_t)it.seq * p.max_blocks;
    /* with a window, the tiles before the one holding the first row's first key hold no
     * key any row sees (rows ascend); the tile grid stays the item's */
    int kb = it.kb;
    if (p.window > 0) {
        const int first0 = tm_attn_imax(0, p.pos[tok0 + it.r0 / p.group] - p.window + 1);
        kb = tm_attn_imax(kb, first0 / C::BC * C::BC);
    }
    const int n_tiles = kb < it.ke ? (it.ke - kb + C::BC - 1) / C::BC : 0;

    if (n_tiles > 0) {
        tm_attn_load_kv<C, EXACT>(skv, skv + C::BC * C::DP, p, table, it.kvh, kb, it.ke);
        tm_cp_async_commit();
    }
    tm_attn_load_q<C, EXACT>(sq, p, it, tok0);

    /* the keys each of this lane's rows sees: pos + 1, cut at the item's end; 0 for rows
     * past n_rows, which therefore see nothing. (The plan ends every split on a tile edge
     * or at its tile's last key, so the cut changes nothing today; it keeps the zero rows
     * past ke out of l whatever the plan does.) */
    int lim[2], first[2] = {0, 0}, lo = 0x7fffffff, hi = 0, f_lo = 0x7fffffff, f_hi = 0;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int r = 16 * wm + g + 8 * hr;
        const int pos = r < it.n_rows ? p.pos[tok0 + (it.r0 + r) / p.group] : 0;
        lim[hr] = r < it.n_rows ? tm_attn_imin(pos + 1, it.ke) : 0;
        if (p.window > 0) first[hr] = tm_attn_imax(0, pos - p.window + 1);
        if (r < it.n_rows) {
            lo = tm_attn_imin(lo, lim[hr]);
            f_lo = tm_attn_imin(f_lo, first[hr]);
            f_hi = tm_attn_imax(f_hi, first[hr]);
        }
        hi = tm_attn_imax(hi, lim[hr]);
    }
    /* over the warp's real rows: tiles below lim_min need no mask, from lim_max on no work;
     * with a window, keys below first_min no work and below first_max a mask */
    const int lim_min = tm_attn_warp_imin(lo);
    const int lim_max = tm_attn_warp_imax(hi);
    const int first_min = tm_attn_warp_imin(f_lo);
    const int first_max = tm_attn_warp_imax(f_hi);

    float o[C::DP / 8][4];
#pragma unroll
    for (int j = 0; j < C::DP / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int i = 0; i < n_tiles; i++) {
        const int k0 = kb + i * C::BC;
        if (i + 1 < n_tiles) {
            __half *nk = skv + (size_t)((i + 1) % C::STAGES) * 2 * C::BC * C::DP;
            tm_attn_load_kv<C, EXACT>(nk, nk + C::BC * C::DP, p, table, it.kvh, k0 + C::BC, it.ke);
            tm_cp_async_commit();
            tm_cp_async_wait<1>();
        } else {
            tm_cp_async_wait<0>();
        }
        __syncthreads();
        const __half *sk = skv + (size_t)(i % C::STAGES) * 2 * C::BC * C::DP;
        const int kw0 = k0 + wk * C::KW; /* this warp's first key */
        /* else every row of the warp has seen all it may, or its keys are before every
         * row's window */
        if (kw0 < lim_max && kw0 + C::KW > first_min)
            tm_attn_warp_tile<C>(sq, sk, sk + C::BC * C::DP, 16 * wm, wk * C::KW, kw0, first, lim,
                                 kw0 + C::KW > lim_min || kw0 < first_max, p, m, l, o);
        __syncthreads();
    }

#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
    }

    if (C::WK == 1) {
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            const int r = 16 * wm + g + 8 * hr;
            if (r >= it.n_rows) continue;
            float *dst = tm_attn_row_dst(p, it, tok0, r);
            const float f = it.part >= 0 ? 1.0f : 1.0f / l[hr];
#pragma unroll
            for (int j = 0; j < C::DP / 8; j++) {
                const int col = 8 * j + 2 * t;
                if (EXACT || col < d)
                    *reinterpret_cast<float2 *>(dst + col) = make_float2(o[j][2 * hr] * f, o[j][2 * hr + 1] * f);
            }
            if (it.part >= 0 && t == 0) {
                p.part_ml[2 * (size_t)(it.part + r)] = m[hr];
                p.part_ml[2 * (size_t)(it.part + r) + 1] = l[hr];
            }
        }
        return;
    }

    /* WK > 1: the key-column warps of the 16 rows merge through shared memory (the K/V
     * stages are free: the loop ended with every copy waited for and a barrier) */
    float *red_o = reinterpret_cast<float *>(skv);  /* (WK, 16, DP) */
    float *red_m = red_o + C::WK * 16 * C::DP;      /* (WK, 16) */
    float *red_l = red_m + C::WK * 16;              /* (WK, 16) */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int r = g + 8 * hr;
#pragma unroll
        for (int j = 0; j < C::DP / 8; j++)
            *reinterpret_cast<float2 *>(red_o + (wk * 16 + r) * C::DP + 8 * j + 2 * t) =
                make_float2(o[j][2 * hr], o[j][2 * hr + 1]);
        if (t == 0) {
            red_m[wk * 16 + r] = m[hr];
            red_l[wk * 16 + r] = l[hr];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < it.n_rows * d; idx += C::NT) {
        const int r = idx / d, col = idx % d;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < C::WK; w++) mx = fmaxf(mx, red_m[w * 16 + r]);
        const float m_use = mx == -INFINITY ? 0.0f : mx;
        float num = 0.0f, den = 0.0f;
#pragma unroll
        for (int w = 0; w < C::WK; w++) {
            const float c = exp2f(red_m[w * 16 + r] - m_use);
            num += c * red_o[(w * 16 + r) * C::DP + col];
            den += c * red_l[w * 16 + r];
        }
        float *dst = tm_attn_row_dst(p, it, tok0, r);
        if (it.part < 0) {
            dst[col] = num / den;
        } else {
            dst[col] = num;
            if (col == 0) {
                p.part_ml[2 * (size_t)(it.part + r)] = mx;
                p.part_ml[2 * (size_t)(it.part + r) + 1] = den;
            }
        }
    }
}

/* Folds the splits of each (sequence, kv head, row tile) into out. A block per merge
 * group, a warp per row: lanes take splits for the max and the sum, then columns. */
static __global__ void tm_attn_merge_kernel(tm_attn_params p, const tm_attn_merge *groups) {
    const tm_attn_merge gr = groups[blockIdx.x];
    const int lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    const int tok0 = p.seq_start[gr.seq];
    for (int r = threadIdx.x >> 5; r < gr.n_rows; r += n_warps) {
        const float *ml = p.part_ml + 2 * (size_t)(gr.part + r);
        const size_t split_stride = (size_t)gr.n_rows; /* partial rows between splits */
        float mx = -INFINITY;
        for (int s = lane; s < gr.n_splits; s += 32) mx = fmaxf(mx, ml[2 * s * split_stride]);
        mx = tm_warp_max(mx);
        const float m_use = mx == -INFINITY ? 0.0f : mx;
        float den = 0.0f;
        for (int s = lane; s < gr.n_splits; s += 32)
            den += exp2f(ml[2 * s * split_stride] - m_use) * ml[2 * s * split_stride + 1];
        den = tm_warp_sum(den);
        const float inv = 1.0f / den;
        const int R = gr.r0 + r;
        float *dst = p.out + ((size_t)(tok0 + R / p.group) * p.n_heads + gr.kvh * p.group + R % p.group) *
                                 p.head_dim;
        const float *po = p.part_o + (size_t)(gr.part + r) * p.head_dim;
        for (int col = lane; col < p.head_dim; col += 32) {
            float num = 0.0f;
            for (int s = 0; s < gr.n_splits; s++)
                num += exp2f(ml[2 * s * split_stride] - m_use) * po[s * split_stride * p.head_dim + col];
            dst[col] = num * inv;
        }
    }
}

#endif
