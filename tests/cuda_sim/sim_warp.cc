/* sim_warp.cc - warp collectives: __syncwarp, the shuffles, votes, match and reduce, and
 * (through sim_ptx.cc) MMA and ldmatrix.
 *
 * Lanes meet by (kind, mask): on sm_70+ the lanes of a mask may reach a collective from
 * different call sites, but they must name the same mask and the same operation. A lane
 * that arrives joins the pending collective that waits for it with its mask and kind;
 * the lane that completes the mask computes every lane's result and wakes the others.
 *
 * A shuffle that reads a lane outside the mask gets undefined data on the GPU; here it
 * gets the poison word 0x7fff7fff (NaN as float and as two halves), so a kernel that uses
 * it shows wrong results instead of passing by luck. */
#include <cstdio>

#include "sim_internal.h"

namespace tm_sim {

static const uint32_t k_poison_word = 0x7fff7fffu;

static void lanes_text(unsigned m, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int l = 0; l < 32 && o + 8 < n; l++)
        if (m >> l & 1) o += (size_t)snprintf(buf + o, n - o, o ? ",%d" : "%d", l);
}

static fiber *lane_fiber(int warp, int lane) { return g.fibers[(size_t)(warp * 32 + lane)]; }

/* A lane is about to exit: a collective that waits for it can never complete. */
void coll_check_exit(fiber *f) {
    warp_state &w = g.warps[(size_t)f->warp];
    for (int i = 0; i < w.n_slots; i++) {
        coll &c = w.colls[i];
        if (!c.active || !(c.mask >> f->lane & 1)) continue;
        char t[48];
        refuse(cudaErrorLaunchFailure, f,
               "exited while lane %d (thread %s) waits for it in %s (%s:%d) with mask %#x; every lane of the "
               "mask must arrive",
               c.first_lane, thread_name(lane_fiber(f->warp, c.first_lane), t, sizeof t), coll_names[c.kind],
               c.file, c.line, c.mask);
    }
}

/* A thread is about to wait at the block barrier: a collective of its warp that waits
 * for it can never complete (and the barrier can never complete either). */
void coll_check_barrier(fiber *f, const char *file, int line) {
    warp_state &w = g.warps[(size_t)f->warp];
    for (int i = 0; i < w.n_slots; i++) {
        coll &c = w.colls[i];
        if (!c.active || !(c.mask >> f->lane & 1)) continue;
        char t[48];
        refuse(cudaErrorLaunchFailure, f,
               "waits at __syncthreads (%s:%d) while lane %d (thread %s) waits for it in %s (%s:%d) with mask "
               "%#x: deadlock",
               file, line, c.first_lane,
               thread_name(lane_fiber(f->warp, c.first_lane), t, sizeof t), coll_names[c.kind], c.file, c.line,
               c.mask);
    }
}

static bool pow2_width(int w) { return w >= 1 && w <= 32 && (w & (w - 1)) == 0; }

/* Source lane of a shuffle as PTX shfl.sync defines it (c = ((32 - width) << 8) | clamp):
 * within a segment of `width` lanes; out of range, the lane keeps its own value. */
static int shfl_source(int kind, int lane, int arg, int width) {
    int seg = 32 - width;                 /* segmask: the bits that select the segment */
    int b = arg & 31;
    int min_lane = lane & seg;
    int max_lane = kind == TM_SIM_SHFL_UP ? min_lane : (lane & seg) | (31 & ~seg);
    int j;
    bool ok;
    switch (kind) {
    case TM_SIM_SHFL_UP: j = lane - b; ok = j >= max_lane; break;
    case TM_SIM_SHFL_DOWN: j = lane + b; ok = j <= max_lane; break;
    case TM_SIM_SHFL_XOR: j = lane ^ b; ok = j <= max_lane; break;
    default: j = min_lane | (b & ~seg); ok = j <= max_lane; break;
    }
    return ok ? j : lane;
}

static void compute(coll *c) {
    lane_val *p[32] = {};
    if (c->kind < TM_SIM_MMA_F16)
        for (int l = 0; l < 32; l++)
            if (c->mask >> l & 1) p[l] = (lane_val *)c->payload[l];
    uint64_t acc;
    switch (c->kind) {
    case TM_SIM_SYNCWARP: return;
    case TM_SIM_SHFL_IDX:
    case TM_SIM_SHFL_UP:
    case TM_SIM_SHFL_DOWN:
    case TM_SIM_SHFL_XOR:
        for (int l = 0; l < 32; l++) {
            if (!p[l]) continue;
            int j = shfl_source(c->kind, l, p[l]->arg, c->variant);
            p[l]->out = (c->mask >> j & 1) ? (uint32_t)p[j]->in : k_poison_word;
        }
        return;
    case TM_SIM_BALLOT:
    case TM_SIM_ANY:
    case TM_SIM_ALL:
        acc = 0;
        for (int l = 0; l < 32; l++)
            if (p[l] && p[l]->in) acc |= 1ull << l;
        if (c->kind == TM_SIM_ANY) acc = acc != 0;
        if (c->kind == TM_SIM_ALL) acc = acc == c->mask;
        break;
    case TM_SIM_MATCH_ANY:
        for (int l = 0; l < 32; l++) {
            if (!p[l]) continue;
            uint64_t m = 0;
            for (int k = 0; k < 32; k++)
                if (p[k] && p[k]->in == p[l]->in) m |= 1ull << k;
            p[l]->out = m;
        }
        return;
    case TM_SIM_MATCH_ALL: {
        int first = __builtin_ctz(c->mask);
        acc = 1;
        for (int l = 0; l < 32; l++)
            if (p[l] && p[l]->in != p[first]->in) acc = 0;
        break;
    }
    case TM_SIM_MMA_F16:
    case TM_SIM_MMA_S8:
    case TM_SIM_LDMATRIX: coll_compute_ptx(c); return;
    default: { /* reductions over 32-bit values */
        uint32_t r = c->kind == TM_SIM_REDUCE_AND ? 0xffffffffu
                     : c->kind == TM_SIM_REDUCE_MIN_U ? 0xffffffffu
                     : c->kind == TM_SIM_REDUCE_MIN_S ? 0x7fffffffu
                     : c->kind == TM_SIM_REDUCE_MAX_S ? 0x80000000u : 0u;
        for (int l = 0; l < 32; l++) {
            if (!p[l]) continue;
            uint32_t v = (uint32_t)p[l]->in;
            switch (c->kind) {
            case TM_SIM_REDUCE_ADD: r += v; break;
            case TM_SIM_REDUCE_MIN_U: r = v < r ? v : r; break;
            case TM_SIM_REDUCE_MAX_U: r = v > r ? v : r; break;
            case TM_SIM_REDUCE_MIN_S: r = (int32_t)v < (int32_t)r ? v : r; break;
            case TM_SIM_REDUCE_MAX_S: r = (int32_t)v > (int32_t)r ? v : r; break;
            case TM_SIM_REDUCE_AND: r &= v; break;
            case TM_SIM_REDUCE_OR: r |= v; break;
            default: r ^= v; break;
            }
        }
        acc = r;
        break;
    }
    }
    for (int l = 0; l < 32; l++)
        if (p[l]) p[l]->out = acc;
}

void warp_collective(int kind, int variant, unsigned mask, void *payload, const char *file, int line) {
    fiber *f = g.cur;
    if (!f) {
        fprintf(stderr, "tm_sim: %s called outside a kernel launch\n", coll_names[kind]);
        abort();
    }
    unsigned bit = 1u << f->lane;
    warp_state &w = g.warps[(size_t)f->warp];
    char ls[160], t[48];
    if (!(mask & bit))
        refuse(cudaErrorLaunchFailure, f, "%s (%s:%d) with mask %#x, which does not include the calling lane %d",
               coll_names[kind], file, line, mask, f->lane);
    if (mask & ~w.exists) {
        lanes_text(mask & ~w.exists, ls, sizeof ls);
        refuse(cudaErrorLaunchFailure, f,
               "%s (%s:%d) with mask %#x names lanes %s of warp %d, which do not exist (the block has %d threads)",
               coll_names[kind], file, line, mask, ls, f->warp, g.n_threads);
    }
    if (mask & ~w.live) {
        int l = __builtin_ctz(mask & ~w.live);
        refuse(cudaErrorLaunchFailure, f, "%s (%s:%d) with mask %#x waits for lane %d (thread %s), which has exited",
               coll_names[kind], file, line, mask, l, thread_name(lane_fiber(f->warp, l), t, sizeof t));
    }
    if ((kind == TM_SIM_SHFL_IDX || kind == TM_SIM_SHFL_UP || kind == TM_SIM_SHFL_DOWN || kind == TM_SIM_SHFL_XOR) &&
        !pow2_width(variant))
        refuse(cudaErrorLaunchFailure, f, "%s (%s:%d) with width %d, which is not a power of two in [1, 32]",
               coll_names[kind], file, line, variant);
    if (g.bar_waiting > 0)
        for (int l = 0; l < 32; l++)
            if ((mask >> l & 1) && lane_fiber(f->warp, l)->state == F_BARRIER)
                refuse(cudaErrorLaunchFailure, f,
                       "%s (%s:%d) with mask %#x waits for lane %d (thread %s), which waits at __syncthreads "
                       "(%s:%d): deadlock",
                       coll_names[kind], file, line, mask, l, thread_name(lane_fiber(f->warp, l), t, sizeof t),
                       g.bar_file, g.bar_line);
    /* Join the pending collective that is waiting for this lane with the same mask and
     * operation. One that waits for this lane but differs can never complete if the new
     * one needs a lane already blocked in it: refuse that as the mismatch it is. A pending
     * collective that does not wait for this lane is an earlier step of other lanes; it
     * may complete first, so it is no error. */
    coll *c = nullptr;
    for (int i = 0; i < w.n_slots; i++) {
        coll &o = w.colls[i];
        if (!o.active || !(o.mask & bit) || (o.arrived & bit)) continue;
        if (o.mask == mask && o.kind == kind && o.variant == variant) {
            c = &o;
            break;
        }
    }
    for (int i = 0; i < w.n_slots && !c; i++) {
        coll &o = w.colls[i];
        if (!o.active || !(o.mask & bit) || (o.arrived & bit) || !(o.arrived & mask)) continue;
        if (o.mask != mask)
            refuse(cudaErrorLaunchFailure, f,
                   "%s (%s:%d) with mask %#x while lane %d (thread %s) waits for this lane in %s (%s:%d) with mask "
                   "%#x: the lanes of one collective must pass the same mask",
                   coll_names[kind], file, line, mask, o.first_lane,
                   thread_name(lane_fiber(f->warp, o.first_lane), t, sizeof t), coll_names[o.kind], o.file, o.line,
                   o.mask);
        refuse(cudaErrorLaunchFailure, f,
               "%s (%s:%d, variant %d) while lane %d (thread %s) waits for this lane in %s (%s:%d, variant %d) "
               "with the same mask %#x: the lanes of a mask must execute the same collective",
               coll_names[kind], file, line, variant, o.first_lane,
               thread_name(lane_fiber(f->warp, o.first_lane), t, sizeof t), coll_names[o.kind], o.file, o.line,
               o.variant, mask);
    }
    if (!c) {
        for (int i = 0; i < w.n_slots; i++)
            if (!w.colls[i].active) {
                c = &w.colls[i];
                break;
            }
        if (!c) {
            if (w.n_slots == (int)(sizeof w.colls / sizeof w.colls[0])) {
                fprintf(stderr, "tm_sim: more than 16 pending collectives in one warp\n");
                abort();
            }
            c = &w.colls[w.n_slots++];
        }
        c->active = true;
        w.n_active++;
        c->kind = kind;
        c->variant = variant;
        c->mask = mask;
        c->arrived = 0;
        c->file = file;
        c->line = line;
        c->first_lane = f->lane;
    }
    c->payload[f->lane] = payload;
    c->arrived |= bit;
    if (c->arrived == c->mask) {
        compute(c);
        c->active = false;
        if (--w.n_active == 0) w.n_slots = 0;
        for (int l = 0; l < 32; l++)
            if ((mask >> l & 1) && l != f->lane) {
                fiber *o = lane_fiber(f->warp, l);
                o->waiting_in = nullptr;
                ready(o);
            }
        return;
    }
    f->state = F_WARP;
    f->waiting_in = c;
    f->wait_file = file;
    f->wait_line = line;
    yield_blocked();
}

} // namespace tm_sim
