// paged_batch.h - one step's ragged batch over a paged KV cache, laid out as the engine
// lays it out: every sequence's pages dealt from a shuffled list (non-contiguous, out of
// order), spare pages that no sequence owns, a block table with a spare column of -1, and
// the new tokens' positions and cache slots. The attention tests (CPU, and CUDA in the
// harness) and the backend conformance test build their cases on it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

extern "C" {
#include "kernels/backend.h"
}

namespace tm_test {

struct PagedSeq {
    int ctx, q_len; // context after the step; new tokens (the last q_len positions)
};

struct PagedBatch {
    int block_size = 0, n_tokens = 0, n_blocks = 0, max_blocks = 0;
    std::vector<int32_t> pages; // (n_blocks) in dealing order; the last spare_pages belong to no sequence
    std::vector<int32_t> tokens, pos, seq_start, ctx_len, table, slots; // as tm_batch holds them
    std::mt19937 g; // seeded with seed; shuffled the pages, then left for the case's own data

    PagedBatch(const std::vector<PagedSeq> &seqs, int bs, int spare_pages, uint32_t seed) : block_size(bs), g(seed) {
        int owned = 0;
        for (const PagedSeq &s : seqs) {
            int nb = (s.ctx + bs - 1) / bs;
            owned += nb;
            max_blocks = std::max(max_blocks, nb + 1);
        }
        n_blocks = owned + spare_pages;
        pages.resize(n_blocks);
        std::iota(pages.begin(), pages.end(), 0);
        std::shuffle(pages.begin(), pages.end(), g);
        table.assign(seqs.size() * max_blocks, -1);
        int next = 0;
        seq_start.push_back(0);
        for (size_t s = 0; s < seqs.size(); s++) {
            for (int b = 0; b * bs < seqs[s].ctx; b++) table[s * max_blocks + b] = pages[next++];
            for (int i = 0; i < seqs[s].q_len; i++) {
                int p = seqs[s].ctx - seqs[s].q_len + i;
                pos.push_back(p);
                tokens.push_back(0);
                slots.push_back(slot(s, p));
            }
            ctx_len.push_back(seqs[s].ctx);
            n_tokens += seqs[s].q_len;
            seq_start.push_back(n_tokens);
        }
    }

    // The cache slot of position p of sequence s.
    int slot(size_t s, int p) const { return table[s * max_blocks + p / block_size] * block_size + p % block_size; }

    tm_batch batch() const {
        tm_batch b = {};
        b.n_tokens = n_tokens;
        b.n_seqs = (int)ctx_len.size();
        b.tokens = tokens.data();
        b.pos = pos.data();
        b.seq_start = seq_start.data();
        b.ctx_len = ctx_len.data();
        b.block_table = table.data();
        b.max_blocks = max_blocks;
        b.slots = slots.data();
        return b;
    }
};

} // namespace tm_test
