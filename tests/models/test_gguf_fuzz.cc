// test_gguf_fuzz.cc - deterministic mutation fuzzing of the GGUF reader.
//
// A small valid file (every metadata type, a nested array, tensors of several types) is
// mutated 20,000 times with a fixed seed and each mutant is opened from memory. A mutant
// must either be refused with a one-line message or open into something every accessor
// can walk, with all tensor data inside the buffer. Run under ASan/UBSan to catch reads
// past the end (each mutant lives in an exactly-sized heap buffer).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/gguf.h"
}

namespace {

typedef std::vector<uint8_t> Bytes;

Bytes seed_file() {
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    EXPECT_NE(w, nullptr);
    tm_gguf_writer_add_str(w, "general.architecture", "llama");
    tm_gguf_writer_add_u32(w, "llama.block_count", 2);
    tm_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
    tm_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
    const char *toks[] = {"<s>", "</s>", "a", "bc"};
    tm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    const float scores[] = {0, 0, -1, -2};
    tm_gguf_writer_add_arr(w, "tokenizer.ggml.scores", TM_GGUF_FLOAT32, scores, 4);
    const int64_t big[] = {-1, 1ll << 40};
    tm_gguf_writer_add_arr(w, "t.i64", TM_GGUF_INT64, big, 2);
    // [[7], []] as u16 arrays: nested arrays only travel as raw entries
    uint8_t raw[] = {5, 0, 0, 0, 0, 0, 0, 0, 't', '.', 'a', 'a', 'r', 9, 0, 0, 0,
                     9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                     2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0,
                     2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, raw, sizeof raw), 0);
    int64_t ne_v[4] = {8, 1, 1, 1}, ne_m[4] = {32, 2, 1, 1};
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t q8[2 * 34], q4[2 * 20];
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof q4; i++) q4[i] = (uint8_t)(3 * i);
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "norm", 1, ne_v, TM_DTYPE_F32, v, sizeof v), 0);
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "wq", 2, ne_m, TM_DTYPE_Q8_0, q8, sizeof q8), 0);
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "wk", 2, ne_m, TM_DTYPE_Q4_1, q4, sizeof q4), 0);
    std::string path = testing::TempDir() + "tm_gguf_fuzz_" + std::to_string(getpid()) + ".gguf";
    char err[256];
    EXPECT_EQ(tm_gguf_writer_write(w, path.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);
    std::ifstream f(path, std::ios::binary);
    Bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    remove(path.c_str());
    return b;
}

// Touches everything an opened file exposes; returns a checksum so nothing is optimized out.
uint64_t walk(const tm_gguf *g, const Bytes &buf) {
    uint64_t sum = tm_gguf_version(g) + tm_gguf_alignment(g);
    EXPECT_TRUE(tm_gguf_version(g) == 2 || tm_gguf_version(g) == 3);
    uint64_t a = tm_gguf_alignment(g);
    EXPECT_TRUE(a && !(a & (a - 1)));
    tm_gguf_writer *w = tm_gguf_writer_create((uint32_t)a);
    for (int64_t i = 0; i < tm_gguf_n_keys(g); i++) {
        const char *key = tm_gguf_key_name(g, i);
        EXPECT_EQ(tm_gguf_find_key(g, key), i);
        uint32_t u; int64_t s; float f; int b; const char *str; size_t len;
        tm_gguf_type et; uint64_t n; const void *data;
        if (!tm_gguf_get_u32(g, key, &u)) sum += u;
        if (!tm_gguf_get_i64(g, key, &s)) sum += (uint64_t)s;
        if (!tm_gguf_get_f32(g, key, &f)) sum += (uint64_t)(f == f);
        if (!tm_gguf_get_bool(g, key, &b)) sum += (uint64_t)b;
        if (!tm_gguf_get_str(g, key, &str, &len)) sum += len + (uint8_t)str[len];
        if (!tm_gguf_get_arr(g, key, &et, &n, &data)) {
            sum += n;
            for (uint64_t j = 0; j < n && et == TM_GGUF_STRING; j++) {
                EXPECT_EQ(tm_gguf_get_arr_str(g, key, j, &str, &len), 0);
                sum += len + (uint8_t)str[len];
            }
        }
        const void *raw;
        size_t raw_n;
        EXPECT_EQ(tm_gguf_key_raw(g, i, &raw, &raw_n), 0);
        EXPECT_GE((const uint8_t *)raw, buf.data());
        EXPECT_LE((const uint8_t *)raw + raw_n, buf.data() + buf.size());
        // every entry of an accepted file must be copyable into a new one
        EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, raw, raw_n), 0) << key;
    }
    tm_gguf_writer_destroy(w);
    for (int64_t i = 0; i < tm_gguf_n_tensors(g); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(g, i);
        EXPECT_EQ(tm_gguf_find_tensor(g, t->name), t);
        EXPECT_TRUE(t->n_dims >= 1 && t->n_dims <= 4);
        EXPECT_TRUE(tm_dtype_valid((int)t->type));
        const uint8_t *p = (const uint8_t *)t->data;
        EXPECT_GE(p, buf.data());
        EXPECT_LE(p + t->n_bytes, buf.data() + buf.size());
        EXPECT_GT(t->n_bytes, 0u);
        sum += p[0] + p[t->n_bytes - 1];  // ASan: first and last byte are in bounds
    }
    return sum;
}

// One random edit of the file.
void mutate(Bytes &b, std::mt19937_64 &rng) {
    static const uint64_t interesting[] = {0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 16, 31, 32, 33, 255, 256,
                                           0x7fffffffull, 0x80000000ull, 0xffffffffull,
                                           0x7fffffffffffffffull, 0x8000000000000000ull,
                                           ~0ull, ~0ull - 31};
    auto pos = [&](size_t extra) { return (size_t)(rng() % (b.size() + extra)); };
    switch (rng() % 7) {
    case 0: b[pos(0)] ^= (uint8_t)(1u << (rng() % 8)); break;  // bit flip
    case 1: b[pos(0)] = (uint8_t)rng(); break;                  // random byte
    case 2: {  // an interesting little-endian value, 1..8 bytes wide
        uint64_t v = interesting[rng() % (sizeof interesting / sizeof *interesting)];
        size_t width = (size_t)(1u << (rng() % 4)), at = pos(0);
        for (size_t k = 0; k < width && at + k < b.size(); k++) b[at + k] = (uint8_t)(v >> (8 * k));
        break;
    }
    case 3: b.resize(pos(0)); break;  // truncate
    case 4: b.insert(b.begin() + (long)pos(1), (size_t)(rng() % 16 + 1), (uint8_t)rng()); break;
    case 5: {  // delete a run
        size_t at = pos(0), n = std::min<size_t>(b.size() - at, rng() % 16 + 1);
        b.erase(b.begin() + (long)at, b.begin() + (long)(at + n));
        break;
    }
    default: {  // copy a run over another place (duplicates names, keys, headers)
        size_t from = pos(0), to = pos(0), n = rng() % 32 + 1;
        for (size_t k = 0; k < n && from + k < b.size() && to + k < b.size(); k++) b[to + k] = b[from + k];
        break;
    }
    }
}

TEST(GgufFuzz, RandomMutationsNeverCrash) {
    const Bytes seed = seed_file();
    ASSERT_GT(seed.size(), 100u);
    std::mt19937_64 rng(20240611);
    int n_ok = 0, n_fail = 0;
    uint64_t sum = 0;
    for (int iter = 0; iter < 20000; iter++) {
        Bytes b = seed;
        int n_edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < n_edits && !b.empty(); e++) mutate(b, rng);
        b.shrink_to_fit();  // exact size: ASan sees any read past the end
        tm_gguf *g = nullptr;
        char err[256] = {0};
        int rc = tm_gguf_open_memory(b.data(), b.size(), &g, err, sizeof err);
        if (rc == 0) {
            ASSERT_NE(g, nullptr);
            sum += walk(g, b);
            tm_gguf_close(g);
            n_ok++;
        } else {
            ASSERT_EQ(g, nullptr);
            ASSERT_TRUE(rc == TM_EFORMAT || rc == TM_EUNSUPPORTED) << iter << ": " << rc << " " << err;
            ASSERT_NE(err[0], '\0') << iter;
            ASSERT_EQ(strchr(err, '\n'), nullptr) << iter;
            n_fail++;
        }
        if (HasFatalFailure() || HasFailure()) {
            ADD_FAILURE() << "mutant " << iter;
            return;
        }
    }
    // both outcomes must be common, or the mutator is not exercising the parser
    EXPECT_GT(n_ok, 1000) << "accepted";
    EXPECT_GT(n_fail, 1000) << "refused";
    printf("%d mutants opened, %d refused (checksum %llu)\n", n_ok, n_fail, (unsigned long long)sum);
}

}  // namespace
