// prefill_batch.h - the batch of one sequence's whole prompt in one step, logits for every
// position: token i at position i and cache slot i (pages 0..3 in order, 16 tokens each).
// For the model tests that compare full logits against llama.cpp's.
#pragma once

#include <cstdint>
#include <vector>

extern "C" {
#include "kernels/backend.h"
}

struct PrefillBatch {
    std::vector<int32_t> pos, table{0, 1, 2, 3};
    int32_t seq_start[2] = {0, 0}, ctx_len[1] = {0};
    tm_batch b = {};

    explicit PrefillBatch(const std::vector<int32_t> &ids) : pos(ids.size()) {
        const int n = (int)ids.size();
        for (int i = 0; i < n; i++) pos[i] = i;
        seq_start[1] = ctx_len[0] = n;
        b.n_tokens = n;
        b.n_seqs = 1;
        b.tokens = ids.data();
        b.pos = pos.data();
        b.seq_start = seq_start;
        b.ctx_len = ctx_len;
        b.block_table = table.data();
        b.max_blocks = (int)table.size();
        b.slots = pos.data();
        b.n_logits = n;
        b.logit_rows = pos.data();
    }
    PrefillBatch(const PrefillBatch &) = delete; // b points into this object
};
