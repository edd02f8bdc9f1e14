/* matmul_pack.c - the packed tile layouts of matmul_impl.h: where each value and scale of
 * a GGUF row goes in a tile of TM_MM_TILE rows. A kernel table names the layout its tile
 * kernel reads (tm_mm_type.pack); matmul.c allocates the tiles and calls these. Portable
 * C only. */
#include <string.h>

#include "kernels/cpu/matmul_impl.h"

static size_t tm_pack_pad64(size_t n) { return (n + 63) / 64 * 64; }

/* Bytes of one tile's section of per-block f16 scales (one per row and block). */
static size_t tm_pack_scale_bytes(int64_t n_cols) {
    return tm_pack_pad64((size_t)(n_cols / TM_QK) * TM_MM_TILE * 2);
}

/* [qs: nb x 256 B][d] (Q4_0), [qs][d][m] (Q4_1), [qs: nb x 512 B][d] (Q8_0). */
static void tm_pack_q4_0_layout(tm_mm_weight *pw, int64_t n_cols) {
    const size_t qs = (size_t)(n_cols / TM_QK) * 256;
    pw->d_off = pw->m_off = qs;
    pw->tile_bytes = qs + tm_pack_scale_bytes(n_cols);
}

static void tm_pack_q4_1_layout(tm_mm_weight *pw, int64_t n_cols) {
    const size_t qs = (size_t)(n_cols / TM_QK) * 256, scales = tm_pack_scale_bytes(n_cols);
    pw->d_off = qs;
    pw->m_off = qs + scales;
    pw->tile_bytes = qs + 2 * scales;
}

/* [qs: nb x 256 B][qh: nb x 64 B][d] (Q5_0), [qs][qh][d][m] (Q5_1). */
static void tm_pack_q5_layout(tm_mm_weight *pw, int64_t n_cols, int with_m) {
    const size_t qs = (size_t)(n_cols / TM_QK) * 256, qh = (size_t)(n_cols / TM_QK) * 64;
    const size_t scales = tm_pack_scale_bytes(n_cols);
    pw->h_off = qs;
    pw->d_off = pw->m_off = qs + qh;
    if (with_m) pw->m_off = qs + qh + scales;
    pw->tile_bytes = qs + qh + (with_m ? 2 : 1) * scales;
}
static void tm_pack_q5_0_layout(tm_mm_weight *pw, int64_t n_cols) { tm_pack_q5_layout(pw, n_cols, 0); }
static void tm_pack_q5_1_layout(tm_mm_weight *pw, int64_t n_cols) { tm_pack_q5_layout(pw, n_cols, 1); }

static void tm_pack_q8_0_layout(tm_mm_weight *pw, int64_t n_cols) {
    const size_t qs = (size_t)(n_cols / TM_QK) * 512;
    pw->d_off = pw->m_off = qs;
    pw->tile_bytes = qs + tm_pack_scale_bytes(n_cols);
}

static void tm_pack_u16_layout(tm_mm_weight *pw, int64_t n_cols) {
    pw->tile_bytes = tm_pack_pad64((size_t)n_cols * TM_MM_TILE * 2);
}

static void tm_pack_f32_layout(tm_mm_weight *pw, int64_t n_cols) {
    pw->tile_bytes = (size_t)n_cols * TM_MM_TILE * 4;
}

/* Row r of tile ti in its GGUF layout, or NULL past the last row. */
static const uint8_t *tm_pack_src_row(const tm_mm_weight *pw, tm_dtype t, int64_t n_rows, int64_t n_cols,
                                      int64_t ti, int r) {
    const int64_t row = ti * TM_MM_TILE + r;
    if (row >= n_rows) return NULL;
    return (const uint8_t *)pw->src + row * tm_dtype_row_bytes(t, n_cols);
}

/* Q4: per block, chunk k (64 B) holds bytes 4k..4k+3 of each row's qs at 4r..4r+3. */
static void tm_pack_q4_block(uint8_t *tile, int64_t b, int r, const uint8_t *qs) {
    for (int k = 0; k < 4; k++) memcpy(tile + b * 256 + k * 64 + 4 * r, qs + 4 * k, 4);
}

static void tm_pack_q4_0_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    uint16_t *dsec = (uint16_t *)(tile + pw->d_off);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, TM_DTYPE_Q4_0, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t b = 0; b < n_cols / TM_QK; b++) {
            const tm_block_q4_0 *blk = (const tm_block_q4_0 *)src + b;
            dsec[b * TM_MM_TILE + r] = blk->d;
            tm_pack_q4_block(tile, b, r, blk->qs);
        }
    }
}

static void tm_pack_q4_1_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    uint16_t *dsec = (uint16_t *)(tile + pw->d_off), *msec = (uint16_t *)(tile + pw->m_off);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, TM_DTYPE_Q4_1, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t b = 0; b < n_cols / TM_QK; b++) {
            const tm_block_q4_1 *blk = (const tm_block_q4_1 *)src + b;
            dsec[b * TM_MM_TILE + r] = blk->d;
            msec[b * TM_MM_TILE + r] = blk->m;
            tm_pack_q4_block(tile, b, r, blk->qs);
        }
    }
}

/* Q5_0 / Q5_1: qs as Q4, the fifth bits rearranged as matmul_impl.h says. */
static void tm_pack_q5_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti, int with_m) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    uint16_t *dsec = (uint16_t *)(tile + pw->d_off), *msec = (uint16_t *)(tile + pw->m_off);
    const tm_dtype t = with_m ? TM_DTYPE_Q5_1 : TM_DTYPE_Q5_0;
    const size_t bb = with_m ? sizeof(tm_block_q5_1) : sizeof(tm_block_q5_0);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, t, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t b = 0; b < n_cols / TM_QK; b++) {
            const uint8_t *blk = src + b * bb;
            uint16_t d, m;
            uint32_t qh;
            memcpy(&d, blk, 2);
            memcpy(&m, blk + 2, 2);
            memcpy(&qh, blk + (with_m ? 4 : 2), 4);
            dsec[b * TM_MM_TILE + r] = d;
            if (with_m) msec[b * TM_MM_TILE + r] = m;
            tm_pack_q4_block(tile, b, r, blk + (with_m ? 8 : 6));
            uint8_t *h = tile + pw->h_off + b * 64 + 4 * r;
            for (int i = 0; i < 4; i++) {
                uint8_t v = 0;
                for (int k = 0; k < 4; k++)
                    v |= (uint8_t)((((qh >> (4 * k + i)) & 1) << k) | (((qh >> (16 + 4 * k + i)) & 1) << (4 + k)));
                h[i] = v;
            }
        }
    }
}
static void tm_pack_q5_0_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    tm_pack_q5_fill(pw, n_rows, n_cols, ti, 0);
}
static void tm_pack_q5_1_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    tm_pack_q5_fill(pw, n_rows, n_cols, ti, 1);
}

/* Q8_0: chunk k holds values 4k..4k+3 of each row, plus 128 (unsigned for vpdpbusd). */
static void tm_pack_q8_0_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    uint16_t *dsec = (uint16_t *)(tile + pw->d_off);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, TM_DTYPE_Q8_0, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t b = 0; b < n_cols / TM_QK; b++) {
            const tm_block_q8_0 *blk = (const tm_block_q8_0 *)src + b;
            dsec[b * TM_MM_TILE + r] = blk->d;
            for (int k = 0; k < 8; k++)
                for (int i = 0; i < 4; i++)
                    tile[b * 512 + k * 64 + 4 * r + i] = (uint8_t)(blk->qs[4 * k + i] + 128);
        }
    }
}

/* Q4_K / Q5_K: the super-block layout of matmul_impl.h. */
static void tm_pack_q45_k_layout(tm_mm_weight *pw, int64_t n_cols, int q5) {
    pw->tile_bytes = (size_t)(n_cols / TM_QK_K) * (q5 ? TM_MM_KQ5_SB : TM_MM_KQ4_SB);
}
static void tm_pack_q4_k_layout(tm_mm_weight *pw, int64_t n_cols) { tm_pack_q45_k_layout(pw, n_cols, 0); }
static void tm_pack_q5_k_layout(tm_mm_weight *pw, int64_t n_cols) { tm_pack_q45_k_layout(pw, n_cols, 1); }

static void tm_pack_q45_k_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti, int q5) {
    const tm_dtype t = q5 ? TM_DTYPE_Q5_K : TM_DTYPE_Q4_K;
    const size_t sb_bytes = q5 ? TM_MM_KQ5_SB : TM_MM_KQ4_SB, bb = (size_t)tm_dtype_block_bytes(t);
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, t, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t s = 0; s < n_cols / TM_QK_K; s++) {
            const uint8_t *blk = src + s * bb; /* d, dmin, scales[12], (qh[32],) qs[128] */
            const uint8_t *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
            uint8_t *sb = tile + s * sb_bytes;
            for (int c = 0; c < 4; c++)
                for (int k = 0; k < 8; k++) memcpy(sb + tm_mm_kq_qs(8 * c + k, q5) + 4 * r, qs + 32 * c + 4 * k, 4);
            tm_kblock kb;
            tm_kblock_unpack(t, blk, &kb); /* the 6-bit scales and mins, decoded once */
            uint8_t *sc = sb + tm_mm_kq_sc(q5);
            for (int j = 0; j < 8; j++) {
                sc[j * 16 + r] = (uint8_t)kb.sc[2 * j];
                sc[128 + (j / 2) * 32 + 2 * r + (j % 2)] = (uint8_t)kb.m[2 * j];
            }
            memcpy(sc + 256 + 2 * r, blk, 2);          /* d */
            memcpy(sc + 256 + 32 + 2 * r, blk + 2, 2); /* dmin */
            if (q5)
                for (int k = 0; k < 8; k++) memcpy(sb + tm_mm_kq_qh(k) + 4 * r, qh + 4 * k, 4);
        }
    }
}
static void tm_pack_q4_k_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    tm_pack_q45_k_fill(pw, n_rows, n_cols, ti, 0);
}
static void tm_pack_q5_k_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    tm_pack_q45_k_fill(pw, n_rows, n_cols, ti, 1);
}

/* Q6_K: the super-block layout of matmul_impl.h. */
static void tm_pack_q6_k_layout(tm_mm_weight *pw, int64_t n_cols) {
    pw->tile_bytes = (size_t)(n_cols / TM_QK_K) * TM_MM_KQ6_SB;
}

static void tm_pack_q6_k_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint8_t *src = tm_pack_src_row(pw, TM_DTYPE_Q6_K, n_rows, n_cols, ti, r);
        if (!src) break;
        for (int64_t s = 0; s < n_cols / TM_QK_K; s++) {
            const tm_block_q6_k *b = (const tm_block_q6_k *)src + s;
            uint8_t *sb = tile + s * TM_MM_KQ6_SB;
            for (int g = 0; g < 16; g++) sb[g * 16 + r] = (uint8_t)b->scales[g];
            memcpy(sb + 256 + 2 * r, &b->d, 2);
            for (int h = 0; h < 2; h++)
                for (int k = 0; k < 8; k++) {
                    uint8_t *c = sb + TM_MM_KQ6_CHUNKS + 3 * 64 * (8 * h + k) + 4 * r;
                    memcpy(c, b->qh + 32 * h + 4 * k, 4);
                    for (int p = 0; p < 2; p++) memcpy(c + 64 * (1 + p), b->ql + 64 * h + 32 * p + 4 * k, 4);
                }
        }
    }
}

/* Dense: element (k, r) at 16k + r. F16 and BF16 rows have the same 2-byte size, so the
 * row address does not depend on which of the two it is. */
static void tm_pack_u16_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    uint16_t *dst = (uint16_t *)(pw->packed + (size_t)ti * pw->tile_bytes);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const uint16_t *s = (const uint16_t *)tm_pack_src_row(pw, TM_DTYPE_F16, n_rows, n_cols, ti, r);
        if (!s) break;
        for (int64_t k = 0; k < n_cols; k++) dst[k * TM_MM_TILE + r] = s[k];
    }
}

static void tm_pack_f32_fill(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti) {
    float *dst = (float *)(pw->packed + (size_t)ti * pw->tile_bytes);
    for (int r = 0; r < TM_MM_TILE; r++) {
        const float *s = (const float *)tm_pack_src_row(pw, TM_DTYPE_F32, n_rows, n_cols, ti, r);
        if (!s) break;
        for (int64_t k = 0; k < n_cols; k++) dst[k * TM_MM_TILE + r] = s[k];
    }
}

const tm_mm_packing tm_mm_pack_q4_0 = {tm_pack_q4_0_layout, tm_pack_q4_0_fill};
const tm_mm_packing tm_mm_pack_q4_1 = {tm_pack_q4_1_layout, tm_pack_q4_1_fill};
const tm_mm_packing tm_mm_pack_q8_0 = {tm_pack_q8_0_layout, tm_pack_q8_0_fill};
const tm_mm_packing tm_mm_pack_q5_0 = {tm_pack_q5_0_layout, tm_pack_q5_0_fill};
const tm_mm_packing tm_mm_pack_q5_1 = {tm_pack_q5_1_layout, tm_pack_q5_1_fill};
const tm_mm_packing tm_mm_pack_q4_k = {tm_pack_q4_k_layout, tm_pack_q4_k_fill};
const tm_mm_packing tm_mm_pack_q5_k = {tm_pack_q5_k_layout, tm_pack_q5_k_fill};
const tm_mm_packing tm_mm_pack_q6_k = {tm_pack_q6_k_layout, tm_pack_q6_k_fill};
const tm_mm_packing tm_mm_pack_u16 = {tm_pack_u16_layout, tm_pack_u16_fill};
const tm_mm_packing tm_mm_pack_f32 = {tm_pack_f32_layout, tm_pack_f32_fill};
