/* matmul_mma.cuh - quantized matmul for many tokens (prefill) on tensor cores: int8 MMA
 * (mma.sync m16n8k32 s8, via tm_mma_m16n8k32_s8) of the weights against activations
 * quantized to 8 bits (matmul_quant.cuh), one 32-value block per MMA, block scales
 * applied in f32. Part of the matmul family (matmul.cuh).
 *
 * Tiles: a block of 4 warps (128 threads) computes 64 weight rows x BN tokens (BN = 32 or
 * 64); warp w owns rows 32 (w % 2) .. +32 and tokens BN/2 (w / 2) .. +BN/2, i.e. 2 x WN
 * m16n8 tiles. K advances 256 values per step (8 legacy blocks, one K-quant super-block);
 * each step's weights, scales and activations are copied global -> shared with cp.async,
 * two stages deep, while the previous step computes. Fragments come from shared memory
 * with ldmatrix, straight from the packed bytes: for a row of 16 bytes, ldmatrix hands
 * lane (g, t) bytes 4t..4t+3 of row g, which is the s8 A fragment's layout, so a Q4 byte
 * word gives the fragment's low k (low nibbles) and high k (high nibbles) with a mask.
 *
 * Scales per type (the CPU reference's order of operations, matmul.c):
 *   Q4_0, Q5_0, Q8_0  acc += dot * (dw * da) (Q4_0's nibbles made signed, -8..7; Q5_0's
 *                     five-bit values -16..15)
 *   Q4_1, Q5_1        acc += dot * (dw * da) + mw * (da * sum_a)
 *   Q4_K, Q5_K  per super-block: sumi = sum_j sc_j dot_j, summ = sum_j m_j sum_a_j (int),
 *               acc += da * (d * sumi - dmin * summ)
 *   Q6_K        per super-block: sumi = sum_g sc_g dot_g over 16-value groups (two MMAs per
 *               32 values, each with half of the A fragment zeroed), acc += (da * d) * sumi
 * Rows past n_rows and tokens past n load row n_rows - 1 / token n - 1 (valid memory)
 * and are not stored. */
#ifndef TM_CUDA_MATMUL_MMA_CUH
#define TM_CUDA_MATMUL_MMA_CUH

#include "kernels/cuda/matmul_gemv.cuh"

enum { TM_MMQ_BM = 64, TM_MMQ_THREADS = 128, TM_MMQ_ASTR = 256 + 16, TM_MMQ_SSTR_A = 48 };

/* Shared-memory layout of one stage for weight type T and BN tokens (byte offsets):
 * W quants (64 rows x WSTR), S scale records (64 x SSTR), D6 Q6_K d chunks (64 x 16),
 * QH Q5_0 / Q5_1 fifth bits (64 x 48: 8 u32 + padding), A activations (BN x ASTR), AD
 * their d (BN x 48: 8 f32 + padding), AS their sums (same).
 * Strides are odd multiples of 16 bytes or chosen so that the 8 rows one ldmatrix or one
 * scale read touches fall in different banks. */
template <tm_dtype T, int BN>
struct tm_mmq_cfg {
    static constexpr bool KQ = T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K || T == TM_DTYPE_Q6_K;
    static constexpr int QB = T == TM_DTYPE_Q8_0 ? 32 : 16;                 /* legacy: quant bytes per block */
    static constexpr int QROW = T == TM_DTYPE_Q6_K ? 192 : T == TM_DTYPE_Q5_K ? 160 : KQ ? 128 : 8 * QB; /* per row per step */
    static constexpr int SROW = tm_mm_has_min(T) ? 32 : 16;                 /* scale bytes per row per step */
    static constexpr int WSTR = QROW + 16;
    static constexpr int SSTR = tm_mm_has_min(T) ? 48 : 16;
    static constexpr int W = 0;
    static constexpr int S = W + TM_MMQ_BM * WSTR;
    static constexpr int D6 = S + TM_MMQ_BM * SSTR;
    static constexpr int QH = D6 + (T == TM_DTYPE_Q6_K ? TM_MMQ_BM * 16 : 0);
    static constexpr int A = QH + (tm_mm_is_q5(T) ? TM_MMQ_BM * TM_MMQ_SSTR_A : 0);
    static constexpr int AD = A + BN * TM_MMQ_ASTR;
    static constexpr int AS = AD + BN * TM_MMQ_SSTR_A;
    static constexpr int STAGE = AS + BN * TM_MMQ_SSTR_A;
};

/* Starts the copies of step st (values 256 st ..) into stage s. */
template <tm_dtype T, int BN>
__device__ __forceinline__ void tm_mmq_load(uint8_t *s, const tm_mm_qw &w, const tm_mm_act &a, int64_t row0, int tok0,
                                            int n, int st) {
    using C = tm_mmq_cfg<T, BN>;
    const int kb0 = 8 * st, nbs = w.nb - kb0 < 8 ? w.nb - kb0 : 8;
    const int qch = C::KQ ? C::QROW / 16 : nbs * C::QB / 16;
    for (int i = threadIdx.x; i < TM_MMQ_BM * qch; i += blockDim.x) {
        const int r = i / qch, c = i % qch;
        const int64_t gr = row0 + r < w.n_rows ? row0 + r : w.n_rows - 1;
        tm_cp_async_16(s + C::W + r * C::WSTR + 16 * c, w.qs + gr * w.row_qs + (int64_t)st * C::QROW + 16 * c);
    }
    constexpr int sch = C::SROW / 16;
    for (int i = threadIdx.x; i < TM_MMQ_BM * sch; i += blockDim.x) {
        const int r = i / sch, c = i % sch;
        const int64_t gr = row0 + r < w.n_rows ? row0 + r : w.n_rows - 1;
        tm_cp_async_16(s + C::S + r * C::SSTR + 16 * c, w.sd + gr * w.row_sd + (int64_t)st * C::SROW + 16 * c);
        if (T == TM_DTYPE_Q6_K) /* the aligned chunk of 8 super-block scales that holds st's */
            tm_cp_async_16(s + C::D6 + r * 16, (const uint8_t *)(w.d6 + gr * w.row_d6) + 16 * (st / 8));
    }
    for (int i = threadIdx.x; tm_mm_is_q5(T) && i < TM_MMQ_BM * 2; i += blockDim.x) { /* 8 blocks' qh: 32 B */
        const int r = i / 2, c = i % 2;
        const int64_t gr = row0 + r < w.n_rows ? row0 + r : w.n_rows - 1;
        tm_cp_async_16(s + C::QH + r * TM_MMQ_SSTR_A + 16 * c, (const uint8_t *)(w.qh + gr * w.row_qh + 8 * st) + 16 * c);
    }
    const int ach = 2 * nbs;
    for (int i = threadIdx.x; i < BN * ach; i += blockDim.x) {
        const int t = i / ach, c = i % ach;
        const int64_t gt = tok0 + t < n ? tok0 + t : n - 1;
        tm_cp_async_16(s + C::A + t * TM_MMQ_ASTR + 16 * c, a.q + gt * a.n_cols + 32 * kb0 + 16 * c);
    }
    for (int i = threadIdx.x; i < BN * 4; i += blockDim.x) { /* d: chunks 0, 1; sums: 2, 3 */
        const int t = i / 4, c = i % 4;
        const int64_t gt = tok0 + t < n ? tok0 + t : n - 1;
        const uint8_t *src = c < 2 ? (const uint8_t *)(a.d + gt * a.nbp + kb0) : (const uint8_t *)(a.sum + gt * a.nbp + kb0);
        tm_cp_async_16(s + (c < 2 ? C::AD : C::AS) + t * TM_MMQ_SSTR_A + 16 * (c & 1), src + 16 * (c & 1));
    }
}

/* B fragments (activations) of the warp's WN n8-tiles for the 32 values at byte col. */
template <int WN>
__device__ __forceinline__ void tm_mmq_load_b(const uint8_t *sa, int col, uint32_t (&b)[WN][2]) {
    const int lane = threadIdx.x & 31, li = lane >> 3, lr = lane & 7;
#pragma unroll
    for (int p = 0; p < WN / 2; p++) {
        uint32_t r[4];
        tm_ldmatrix_x4(r, sa + ((2 * p + (li >> 1)) * 8 + lr) * TM_MMQ_ASTR + col + (li & 1) * 16);
        b[2 * p][0] = r[0], b[2 * p][1] = r[1], b[2 * p + 1][0] = r[2], b[2 * p + 1][1] = r[3];
    }
}

/* Raw A words of m16 tile mt for the 32 bytes at col of the warp's rows: [0] rows g,
 * bytes 4t.., [1] rows g + 8, [2] rows g, bytes 16 + 4t.., [3] rows g + 8 (the s8 A
 * fragment of 32 int8 values; for packed nibbles, the bytes holding them). */
template <int WSTR>
__device__ __forceinline__ void tm_mmq_load_a32(const uint8_t *sw, int mt, int col, uint32_t (&r)[4]) {
    const int lane = threadIdx.x & 31, li = lane >> 3, lr = lane & 7;
    tm_ldmatrix_x4(r, sw + (mt * 16 + (li & 1) * 8 + lr) * WSTR + col + (li >> 1) * 16);
}

/* acc += this stage's products (see the header comment for each type). */
template <tm_dtype T, int WN>
__device__ __forceinline__ void tm_mmq_compute(const uint8_t *s, int st, int nbs, float (&acc)[2][WN][4]) {
    using C = tm_mmq_cfg<T, 16 * WN>;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1;
    const int g = lane >> 2, t = lane & 3;
    const uint8_t *sw = s + C::W + 32 * wm * C::WSTR;
    const uint8_t *sa = s + C::A + 8 * WN * wn * TM_MMQ_ASTR;
    const float *sad = (const float *)(s + C::AD);
    const int *sas = (const int *)(s + C::AS);
    const int zero[4] = {0, 0, 0, 0};
    int rows[2][2], toks[WN][2]; /* the thread's rows and tokens within the block tile */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        for (int hf = 0; hf < 2; hf++) rows[mt][hf] = 32 * wm + 16 * mt + g + 8 * hf;
#pragma unroll
    for (int nt = 0; nt < WN; nt++)
        for (int e = 0; e < 2; e++) toks[nt][e] = 8 * WN * wn + 8 * nt + 2 * t + e;

    if constexpr (!C::KQ) {
        for (int kb = 0; kb < nbs; kb++) {
            uint32_t b[WN][2], af[2][4];
            tm_mmq_load_b<WN>(sa, 32 * kb, b);
            if constexpr (T == TM_DTYPE_Q8_0) {
                tm_mmq_load_a32<C::WSTR>(sw, 0, 32 * kb, af[0]);
                tm_mmq_load_a32<C::WSTR>(sw, 1, 32 * kb, af[1]);
            } else { /* one block = 16 bytes per row: one ldmatrix covers the warp's 32 rows */
                uint32_t r[4];
                tm_ldmatrix_x4(r, sw + lane * C::WSTR + 16 * kb);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    /* rows g and g + 8 of the tile: bytes 4t .. 4t + 3 hold values 4t .. (low
                     * nibbles) and 16 + 4t .. (high); Q5: the rows' fifth bits, bit j: value j */
                    const uint32_t r0 = r[2 * mt], r1 = r[2 * mt + 1];
                    uint32_t h0 = 0, h1 = 0;
                    if constexpr (tm_mm_is_q5(T)) {
                        h0 = ((const uint32_t *)(s + C::QH + rows[mt][0] * TM_MMQ_SSTR_A))[kb] >> (4 * t);
                        h1 = ((const uint32_t *)(s + C::QH + rows[mt][1] * TM_MMQ_SSTR_A))[kb] >> (4 * t);
                    }
                    af[mt][0] = tm_mm_nib4<T>(r0, h0), af[mt][1] = tm_mm_nib4<T>(r1, h1);
                    af[mt][2] = tm_mm_nib4<T>(r0 >> 4, h0 >> 16), af[mt][3] = tm_mm_nib4<T>(r1 >> 4, h1 >> 16);
                }
            }
            float dw[2][2], mw[2][2], da[WN][2], sa_[WN][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                for (int hf = 0; hf < 2; hf++) {
                    const __half *sr = (const __half *)(s + C::S + rows[mt][hf] * C::SSTR);
                    dw[mt][hf] = __half2float(sr[tm_mm_has_min(T) ? 2 * kb : kb]);
                    mw[mt][hf] = tm_mm_has_min(T) ? __half2float(sr[2 * kb + 1]) : 0.0f;
                }
#pragma unroll
            for (int nt = 0; nt < WN; nt++)
                for (int e = 0; e < 2; e++) {
                    da[nt][e] = sad[toks[nt][e] * 12 + kb];
                    sa_[nt][e] = tm_mm_has_min(T) ? da[nt][e] * (float)sas[toks[nt][e] * 12 + kb] : 0.0f;
                }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < WN; nt++) {
                    int c[4];
                    tm_mma_m16n8k32_s8(c, af[mt], b[nt], zero);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const int hf = i >> 1, e = i & 1;
                        float v = (float)c[i] * (dw[mt][hf] * da[nt][e]);
                        if (tm_mm_has_min(T)) v += mw[mt][hf] * sa_[nt][e];
                        acc[mt][nt][i] += v;
                    }
                }
        }
    } else {
        (void)nbs;
        int cs[2][WN][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
            for (int nt = 0; nt < WN; nt++)
                for (int i = 0; i < 4; i++) cs[mt][nt][i] = 0;
        uint32_t hw[2][2][4]; /* each row's 16-byte scale record as 4 words (Q4_K, Q5_K: unpacked) */
        float hd[2][2][2];    /* Q4_K, Q5_K: each row's d, dmin */
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const uint8_t *rec = s + C::S + rows[mt][hf] * C::SSTR;
                const uint4 v = *(const uint4 *)rec;
                hw[mt][hf][0] = v.x, hw[mt][hf][1] = v.y, hw[mt][hf][2] = v.z, hw[mt][hf][3] = v.w;
                if (T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K) {
                    const __half2 dd = *(const __half2 *)rec;
                    hd[mt][hf][0] = __low2float(dd), hd[mt][hf][1] = __high2float(dd);
                    const uint32_t sc3[3] = {v.y, v.z, v.w};
                    tm_mm_q4k_unpack(sc3, hw[mt][hf]);
                }
            }
        if constexpr (T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K) {
            uint32_t qh[2][4] = {}; /* Q5_K: qh bytes at the positions of the A fragment's words */
            if constexpr (T == TM_DTYPE_Q5_K) {
                tm_mmq_load_a32<C::WSTR>(sw, 0, 128, qh[0]);
                tm_mmq_load_a32<C::WSTR>(sw, 1, 128, qh[1]);
            }
#pragma unroll
            for (int c = 0; c < 4; c++) { /* chunk c: sub-blocks 2c (low nibbles), 2c + 1 (high) */
                uint32_t raw[2][4];
                tm_mmq_load_a32<C::WSTR>(sw, 0, 32 * c, raw[0]);
                tm_mmq_load_a32<C::WSTR>(sw, 1, 32 * c, raw[1]);
#pragma unroll
                for (int hs = 0; hs < 2; hs++) {
                    const int j = 2 * c + hs;
                    uint32_t b[WN][2], af[2][4];
                    tm_mmq_load_b<WN>(sa, 32 * j, b);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++)
                        for (int k = 0; k < 4; k++) /* Q5_K: bit j of qh[l] is value 32 j + l's fifth bit */
                            af[mt][k] = ((raw[mt][k] >> (4 * hs)) & 0x0f0f0f0fu) | ((qh[mt][k] >> j) & 0x01010101u) << 4;
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        int sc[2];
#pragma unroll
                        for (int hf = 0; hf < 2; hf++) sc[hf] = tm_mm_byte8(hw[mt][hf], j);
#pragma unroll
                        for (int nt = 0; nt < WN; nt++) {
                            int c4[4];
                            tm_mma_m16n8k32_s8(c4, af[mt], b[nt], zero);
                            for (int i = 0; i < 4; i++) cs[mt][nt][i] += sc[i >> 1] * c4[i];
                        }
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const float d = hd[mt][hf][0], dmin = hd[mt][hf][1];
#pragma unroll
                    for (int nt = 0; nt < WN; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int tk = toks[nt][e];
                            int summ = 0;
#pragma unroll
                            for (int j = 0; j < 8; j++) summ += tm_mm_byte8(hw[mt][hf] + 2, j) * sas[tk * 12 + j];
                            acc[mt][nt][2 * hf + e] +=
                                sad[tk * 12] * (d * (float)cs[mt][nt][2 * hf + e] - dmin * (float)summ);
                        }
                }
        } else { /* Q6_K */
            const uint8_t *s6 = s + C::D6;
#pragma unroll
            for (int h = 0; h < 2; h++) { /* half h: ql bytes 64h .. +64, qh bytes 128 + 32h .. +32 */
                uint32_t qa[2][4], qb[2][4], qh[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    tm_mmq_load_a32<C::WSTR>(sw, mt, 64 * h, qa[mt]);
                    tm_mmq_load_a32<C::WSTR>(sw, mt, 64 * h + 32, qb[mt]);
                    tm_mmq_load_a32<C::WSTR>(sw, mt, 128 + 32 * h, qh[mt]);
                }
#pragma unroll
                for (int sp = 0; sp < 4; sp++) { /* values 128h + 32sp ..: groups 2j, 2j + 1 */
                    const int j = 4 * h + sp;
                    uint32_t b[WN][2];
                    tm_mmq_load_b<WN>(sa, 32 * j, b);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        uint32_t v[4];
                        for (int k = 0; k < 4; k++) {
                            const uint32_t ql = (sp & 1) ? qb[mt][k] : qa[mt][k];
                            v[k] = tm_mm_s6(((ql >> (4 * (sp >> 1))) & 0x0f0f0f0fu) |
                                            (((qh[mt][k] >> (2 * sp)) & 0x03030303u) << 4));
                        }
                        const uint32_t alo[4] = {v[0], v[1], 0, 0}, ahi[4] = {0, 0, v[2], v[3]};
                        int sc[2][2]; /* [hf][group 2j or 2j + 1] */
                        for (int hf = 0; hf < 2; hf++)
                            for (int q = 0; q < 2; q++) {
                                const int k = 2 * j + q;
                                sc[hf][q] = (int)(int8_t)(hw[mt][hf][k >> 2] >> (8 * (k & 3)));
                            }
#pragma unroll
                        for (int nt = 0; nt < WN; nt++) {
                            int c1[4], c2[4];
                            tm_mma_m16n8k32_s8(c1, alo, b[nt], zero);
                            tm_mma_m16n8k32_s8(c2, ahi, b[nt], zero);
                            for (int i = 0; i < 4; i++) cs[mt][nt][i] += sc[i >> 1][0] * c1[i] + sc[i >> 1][1] * c2[i];
                        }
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                for (int hf = 0; hf < 2; hf++) {
                    const float d = __half2float(((const __half *)(s6 + rows[mt][hf] * 16))[st & 7]);
                    for (int nt = 0; nt < WN; nt++)
                        for (int e = 0; e < 2; e++)
                            acc[mt][nt][2 * hf + e] += (sad[toks[nt][e] * 12] * d) * (float)cs[mt][nt][2 * hf + e];
                }
        }
    }
}

/* out (n, n_rows): block (x, y) computes rows 64 x .. and tokens BN y .. */
template <tm_dtype T, int WN>
static __global__ void tm_mm_mma_kernel(float *out, tm_mm_qw w, tm_mm_act a, const float *bias, int n) {
    using C = tm_mmq_cfg<T, 16 * WN>;
    uint8_t *smem = tm_dyn_smem<uint8_t>();
    const int64_t row0 = (int64_t)blockIdx.x * TM_MMQ_BM;
    const int tok0 = blockIdx.y * 16 * WN;
    const int nst = (w.nb + 7) / 8;
    float acc[2][WN][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        for (int nt = 0; nt < WN; nt++)
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;

    tm_mmq_load<T, 16 * WN>(smem, w, a, row0, tok0, n, 0);
    tm_cp_async_commit();
    for (int st = 0; st < nst; st++) {
        if (st + 1 < nst) tm_mmq_load<T, 16 * WN>(smem + ((st + 1) & 1) * C::STAGE, w, a, row0, tok0, n, st + 1);
        tm_cp_async_commit(); /* possibly empty: keeps "all but the newest group" = step st */
        tm_cp_async_wait<1>();
        __syncthreads();
        const int nbs = w.nb - 8 * st < 8 ? w.nb - 8 * st : 8;
        tm_mmq_compute<T, WN>(smem + (st & 1) * C::STAGE, st, nbs, acc);
        __syncthreads(); /* before the next iteration's copies overwrite this stage */
    }

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        for (int nt = 0; nt < WN; nt++)
            for (int i = 0; i < 4; i++) {
                const int64_t row = row0 + 32 * wm + 16 * mt + g + 8 * (i >> 1);
                const int tok = tok0 + 8 * WN * wn + 8 * nt + 2 * t + (i & 1);
                if (row < w.n_rows && tok < n) out[(int64_t)tok * w.n_rows + row] = acc[mt][nt][i] + (bias ? bias[row] : 0.0f);
            }
}

template <tm_dtype T, int WN>
static cudaError_t tm_mm_mma_launch(const tm_cuda_ctx *ctx, float *out, const tm_mm_qw &w, const tm_mm_act &a,
                                    const float *bias, int n) {
    constexpr size_t smem = 2 * (size_t)tm_mmq_cfg<T, 16 * WN>::STAGE;
    if (smem > ctx->max_smem) CUDA_TRY(cudaErrorInvalidConfiguration);
    static unsigned opted_in = 0; /* devices done, for this instantiation */
    CUDA_TRY(tm_cuda_smem_opt_in(ctx, reinterpret_cast<const void *>(&tm_mm_mma_kernel<T, WN>), smem, &opted_in));
    const dim3 grid(tm_cdiv(w.n_rows, TM_MMQ_BM), tm_cdiv(n, 16 * WN));
    CUDA_TRY(TM_LAUNCH((tm_mm_mma_kernel<T, WN>), grid, TM_MMQ_THREADS, smem, ctx->stream, out, w, a, bias, n));
    return cudaSuccess;
}

/* out (n, n_rows) = w . a for any n >= 1. */
template <tm_dtype T>
static cudaError_t tm_mm_mma(const tm_cuda_ctx *ctx, float *out, const tm_mm_qw &w, const tm_mm_act &a,
                             const float *bias, int n) {
    if (n <= 32) return tm_mm_mma_launch<T, 2>(ctx, out, w, a, bias, n);
    return tm_mm_mma_launch<T, 4>(ctx, out, w, a, bias, n);
}

#endif
