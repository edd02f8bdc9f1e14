/* sim_ptx.cc - the PTX instructions kernels reach through common.cuh's wrappers:
 * mma.sync m16n8k16 (f16 -> f32) and m16n8k32 (s8 -> s32), ldmatrix .x1/.x2/.x4 (.trans)
 * and cp.async. The first two are warp collectives over the full warp with the fragment
 * layouts of the PTX ISA (g = lane / 4, t = lane % 4):
 *   m16n8k16 f16: a[0] A[g][2t..2t+1], a[1] A[g+8][2t..], a[2] A[g][2t+8..], a[3] A[g+8][2t+8..];
 *                 b[0] B[2t..2t+1][g], b[1] B[2t+8..2t+9][g]  (lower element in the low half)
 *   m16n8k32 s8:  a[0] A[g][4t..4t+3], a[1] A[g+8][4t..], a[2] A[g][4t+16..], a[3] A[g+8][4t+16..];
 *                 b[0] B[4t..4t+3][g], b[1] B[4t+16..4t+19][g]  (lowest k in the low byte)
 *   C and D:      c[0] C[g][2t], c[1] C[g][2t+1], c[2] C[g+8][2t], c[3] C[g+8][2t+1]
 *   ldmatrix:     lane 8i+j gives the address of row j of matrix i (16 bytes, 16-aligned,
 *                 shared memory); lane l receives row l/4, elements 2(l%4) and 2(l%4)+1
 *                 of each matrix (of its transpose with .trans).
 * cp.async copies are queued per thread and performed when the thread waits for their
 * commit group (or exits), so a kernel that reads before waiting sees the poison. */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sim_internal.h"
#include "tm_sim/convert.h"

namespace tm_sim {

struct mma_f16_lane {
    float *d;
    const uint32_t *a, *b;
    const float *c;
};
struct mma_s8_lane {
    int *d;
    const uint32_t *a, *b;
    const int *c;
};
struct ldm_lane {
    uint32_t *r;
    const void *addr;
};

static void mma_f16(coll *c) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const mma_f16_lane *p = (const mma_f16_lane *)c->payload[l];
        int gq = l >> 2, t = l & 3;
        for (int h = 0; h < 2; h++) {
            A[gq][2 * t + h] = f16_to_f32((uint16_t)(p->a[0] >> 16 * h));
            A[gq + 8][2 * t + h] = f16_to_f32((uint16_t)(p->a[1] >> 16 * h));
            A[gq][2 * t + 8 + h] = f16_to_f32((uint16_t)(p->a[2] >> 16 * h));
            A[gq + 8][2 * t + 8 + h] = f16_to_f32((uint16_t)(p->a[3] >> 16 * h));
            B[2 * t + h][gq] = f16_to_f32((uint16_t)(p->b[0] >> 16 * h));
            B[2 * t + 8 + h][gq] = f16_to_f32((uint16_t)(p->b[1] >> 16 * h));
        }
        C[gq][2 * t] = p->c[0];
        C[gq][2 * t + 1] = p->c[1];
        C[gq + 8][2 * t] = p->c[2];
        C[gq + 8][2 * t + 1] = p->c[3];
    }
    /* products of f16 values are exact in float; accumulate in float as the tensor core does */
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            float s = 0;
            for (int k = 0; k < 16; k++) s += A[i][k] * B[k][j];
            D[i][j] = C[i][j] + s;
        }
    for (int l = 0; l < 32; l++) { /* d may alias c: written only after every read */
        const mma_f16_lane *p = (const mma_f16_lane *)c->payload[l];
        int gq = l >> 2, t = l & 3;
        p->d[0] = D[gq][2 * t];
        p->d[1] = D[gq][2 * t + 1];
        p->d[2] = D[gq + 8][2 * t];
        p->d[3] = D[gq + 8][2 * t + 1];
    }
}

static void mma_s8(coll *c) {
    int A[16][32], B[32][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const mma_s8_lane *p = (const mma_s8_lane *)c->payload[l];
        int gq = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) {
            A[gq][4 * t + i] = (int8_t)(p->a[0] >> 8 * i);
            A[gq + 8][4 * t + i] = (int8_t)(p->a[1] >> 8 * i);
            A[gq][4 * t + 16 + i] = (int8_t)(p->a[2] >> 8 * i);
            A[gq + 8][4 * t + 16 + i] = (int8_t)(p->a[3] >> 8 * i);
            B[4 * t + i][gq] = (int8_t)(p->b[0] >> 8 * i);
            B[4 * t + 16 + i][gq] = (int8_t)(p->b[1] >> 8 * i);
        }
        C[gq][2 * t] = p->c[0];
        C[gq][2 * t + 1] = p->c[1];
        C[gq + 8][2 * t] = p->c[2];
        C[gq + 8][2 * t + 1] = p->c[3];
    }
    uint32_t D[16][8]; /* wraps modulo 2^32 like the instruction without .satfinite */
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            uint32_t s = (uint32_t)C[i][j];
            for (int k = 0; k < 32; k++) s += (uint32_t)(A[i][k] * B[k][j]);
            D[i][j] = s;
        }
    for (int l = 0; l < 32; l++) {
        const mma_s8_lane *p = (const mma_s8_lane *)c->payload[l];
        int gq = l >> 2, t = l & 3;
        p->d[0] = (int)D[gq][2 * t];
        p->d[1] = (int)D[gq][2 * t + 1];
        p->d[2] = (int)D[gq + 8][2 * t];
        p->d[3] = (int)D[gq + 8][2 * t + 1];
    }
}

static void ldmatrix(coll *c) {
    int n_mats = c->variant >> 1, trans = c->variant & 1;
    uint16_t M[4][8][8];
    for (int i = 0; i < n_mats; i++)
        for (int j = 0; j < 8; j++) {
            int l = 8 * i + j;
            const ldm_lane *p = (const ldm_lane *)c->payload[l];
            fiber *who = g.fibers[(size_t)(g.cur->warp * 32 + l)];
            if ((uintptr_t)p->addr & 15)
                refuse(cudaErrorMisalignedAddress, who, "ldmatrix row address %p (matrix %d row %d) is not 16-byte aligned",
                       p->addr, i, j);
            if (!is_shared_range(p->addr, 16))
                refuse(cudaErrorIllegalAddress, who,
                       "ldmatrix row address %p (matrix %d row %d) is not inside shared memory (static arrays, "
                       "or the %zu bytes of dynamic shared memory)",
                       p->addr, i, j, g.smem);
            memcpy(M[i][j], p->addr, 16);
        }
    for (int l = 0; l < 32; l++) {
        const ldm_lane *p = (const ldm_lane *)c->payload[l];
        int row = l >> 2, col = 2 * (l & 3);
        for (int i = 0; i < n_mats; i++) {
            uint16_t lo = trans ? M[i][col][row] : M[i][row][col];
            uint16_t hi = trans ? M[i][col + 1][row] : M[i][row][col + 1];
            p->r[i] = (uint32_t)lo | (uint32_t)hi << 16;
        }
    }
}

void coll_compute_ptx(coll *c) {
    if (c->kind == TM_SIM_MMA_F16) mma_f16(c);
    else if (c->kind == TM_SIM_MMA_S8) mma_s8(c);
    else ldmatrix(c);
}

void tm_sim_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_f16_lane p{d, a, b, c};
    warp_collective(TM_SIM_MMA_F16, 0, 0xffffffffu, &p, __FILE__, __LINE__);
}

void tm_sim_mma_m16n8k32_s8(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4]) {
    mma_s8_lane p{d, a, b, c};
    warp_collective(TM_SIM_MMA_S8, 0, 0xffffffffu, &p, __FILE__, __LINE__);
}

void tm_sim_ldmatrix(uint32_t *r, int n_mats, int trans, const void *row_addr) {
    if (n_mats != 1 && n_mats != 2 && n_mats != 4) refuse(cudaErrorLaunchFailure, nullptr, "ldmatrix .x%d", n_mats);
    ldm_lane p{r, row_addr};
    warp_collective(TM_SIM_LDMATRIX, n_mats * 2 + (trans != 0), 0xffffffffu, &p, __FILE__, __LINE__);
}

/* ---- cp.async ---------------------------------------------------------------------------- */

void tm_sim_cp_async(void *smem, const void *gmem, int n_bytes) {
    fiber *f = g.cur;
    if (!f) {
        fprintf(stderr, "tm_sim: cp.async outside a kernel launch\n");
        abort();
    }
    if (n_bytes != 4 && n_bytes != 8 && n_bytes != 16)
        refuse(cudaErrorLaunchFailure, f, "cp.async of %d bytes (4, 8 or 16)", n_bytes);
    if (((uintptr_t)smem | (uintptr_t)gmem) % (uintptr_t)n_bytes)
        refuse(cudaErrorMisalignedAddress, f, "cp.async of %d bytes from %p to %p: both must be %d-byte aligned",
               n_bytes, gmem, smem, n_bytes);
    if (!is_shared_range(smem, (size_t)n_bytes))
        refuse(cudaErrorIllegalAddress, f,
               "cp.async destination %p (%d bytes) is not inside shared memory (static arrays, or the %zu bytes of "
               "dynamic shared memory)",
               smem, n_bytes, g.smem);
    if (is_shared_range(gmem, 1))
        refuse(cudaErrorIllegalAddress, f, "cp.async source %p is shared memory; it must be global", gmem);
    f->cp.push_back(cp_op{smem, gmem, n_bytes, -1});
}

void tm_sim_cp_async_commit() {
    fiber *f = g.cur;
    if (!f) return;
    for (cp_op &o : f->cp)
        if (o.group < 0) o.group = f->cp_groups;
    f->cp_groups++;
}

/* Performs, in issue order, the copies of every committed group except the newest
 * keep_groups ones; keep_groups < 0 (the thread exits): every copy, committed or not. */
void cp_async_flush(fiber *f, int keep_groups) {
    size_t kept = 0;
    for (size_t i = 0; i < f->cp.size(); i++) {
        cp_op o = f->cp[i];
        bool done = keep_groups < 0 || (o.group >= 0 && o.group < f->cp_groups - keep_groups);
        if (done) memcpy(o.dst, o.src, (size_t)o.n_bytes);
        else f->cp[kept++] = o;
    }
    f->cp.resize(kept);
}

void tm_sim_cp_async_wait(int n_pending) {
    fiber *f = g.cur;
    if (!f) return;
    cp_async_flush(f, n_pending < 0 ? 0 : n_pending);
}

} // namespace tm_sim
