// test_gguf_writer.cc - the GGUF writer (models/gguf_writer.c): round trips through the
// reader at every alignment, bad input, streaming order and cleanup, in-memory images.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gguf_test_util.h"

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/gguf.h"
}

namespace {

class WriterAlign : public testing::TestWithParam<uint32_t> {};

TEST_P(WriterAlign, RoundTripsEveryTypeAndTensor) {
    const uint32_t align = GetParam();
    tm_gguf_writer *w = tm_gguf_writer_create(align);
    ASSERT_NE(w, nullptr);
    ASSERT_EQ(tm_gguf_writer_add_u32(w, "k.u32", 123456), 0);
    ASSERT_EQ(tm_gguf_writer_add_f32(w, "k.f32", -0.125f), 0);
    ASSERT_EQ(tm_gguf_writer_add_bool(w, "k.bool", 7), 0);
    ASSERT_EQ(tm_gguf_writer_add_str(w, "k.str", "héllo"), 0);
    const int32_t ints[] = {-1, 0, 1 << 30};
    ASSERT_EQ(tm_gguf_writer_add_arr(w, "k.arr", TM_GGUF_INT32, ints, 3), 0);
    const double dbl[] = {1e300, -0.5};
    ASSERT_EQ(tm_gguf_writer_add_arr(w, "k.arr_f64", TM_GGUF_FLOAT64, dbl, 2), 0);
    const char *strs[] = {"a", "bb", "", "dddd"};
    ASSERT_EQ(tm_gguf_writer_add_arr_str(w, "k.arr_str", strs, 4), 0);
    // a raw entry: a nested array only add_raw_kv can express
    Bytes nested = kv("k.nested", TM_GGUF_ARRAY,
                      B().u32(TM_GGUF_ARRAY).u64(1).u32(TM_GGUF_UINT16).u64(2).u16(5).u16(6).b);
    ASSERT_EQ(tm_gguf_writer_add_raw_kv(w, nested.data(), nested.size()), 0);

    // tensors of several types with odd sizes so that padding matters
    std::mt19937 rng(1);
    struct T { const char *name; int n_dims; int64_t ne[4]; tm_dtype type; Bytes data; };
    std::vector<T> ts = {
        {"v.f32", 1, {5, 1, 1, 1}, TM_DTYPE_F32, {}},
        {"m.f16", 2, {3, 7, 1, 1}, TM_DTYPE_F16, {}},
        {"m.q8_0", 2, {64, 3, 1, 1}, TM_DTYPE_Q8_0, {}},
        {"m.q4_0", 3, {32, 2, 3, 1}, TM_DTYPE_Q4_0, {}},
        {"m.q4_1", 4, {32, 1, 2, 2}, TM_DTYPE_Q4_1, {}},
    };
    for (T &t : ts) {
        int64_t n = tm_dtype_row_bytes(t.type, t.ne[0]) * t.ne[1] * t.ne[2] * t.ne[3];
        t.data.resize((size_t)n);
        for (auto &x : t.data) x = (uint8_t)rng();
        ASSERT_EQ(tm_gguf_writer_add_tensor(w, t.name, t.n_dims, t.ne, t.type, t.data.data(), n), 0) << t.name;
    }
    std::string path = tmp_path(("rt" + std::to_string(align) + ".gguf").c_str());
    char err[256];
    ASSERT_EQ(tm_gguf_writer_write(w, path.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);

    tm_gguf *g;
    ASSERT_EQ(tm_gguf_open(path.c_str(), &g, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_version(g), 3u);
    EXPECT_EQ(tm_gguf_alignment(g), align);
    // the writer adds general.alignment itself when it is not the default
    EXPECT_EQ(tm_gguf_n_keys(g), align == 32 ? 8 : 9);
    uint32_t u;
    float f;
    int b;
    const char *s;
    size_t len;
    EXPECT_EQ(tm_gguf_get_u32(g, "k.u32", &u), 0); EXPECT_EQ(u, 123456u);
    EXPECT_EQ(tm_gguf_get_f32(g, "k.f32", &f), 0); EXPECT_EQ(f, -0.125f);
    EXPECT_EQ(tm_gguf_get_bool(g, "k.bool", &b), 0); EXPECT_EQ(b, 1);
    EXPECT_EQ(tm_gguf_get_str(g, "k.str", &s, &len), 0); EXPECT_STREQ(s, "héllo");
    tm_gguf_type et;
    uint64_t n;
    const void *data;
    ASSERT_EQ(tm_gguf_get_arr(g, "k.arr", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_INT32); ASSERT_EQ(n, 3u);
    EXPECT_EQ(memcmp(data, ints, sizeof ints), 0);
    ASSERT_EQ(tm_gguf_get_arr(g, "k.arr_f64", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_FLOAT64); ASSERT_EQ(n, 2u);
    EXPECT_EQ(memcmp(data, dbl, sizeof dbl), 0);
    for (uint64_t i = 0; i < 4; i++) {
        ASSERT_EQ(tm_gguf_get_arr_str(g, "k.arr_str", i, &s, &len), 0);
        EXPECT_STREQ(s, strs[i]);
    }
    int64_t ni = tm_gguf_find_key(g, "k.nested");
    ASSERT_GE(ni, 0);
    const void *raw;
    size_t raw_n;
    ASSERT_EQ(tm_gguf_key_raw(g, ni, &raw, &raw_n), 0);
    EXPECT_EQ(Bytes((const uint8_t *)raw, (const uint8_t *)raw + raw_n), nested);

    ASSERT_EQ(tm_gguf_n_tensors(g), (int64_t)ts.size());
    for (size_t i = 0; i < ts.size(); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(g, (int64_t)i);
        EXPECT_STREQ(t->name, ts[i].name);
        EXPECT_EQ(t->n_dims, ts[i].n_dims);
        for (int d = 0; d < 4; d++) EXPECT_EQ(t->ne[d], ts[i].ne[d]) << t->name << " dim " << d;
        EXPECT_EQ(t->type, ts[i].type);
        EXPECT_EQ(t->offset % align, 0u);
        EXPECT_EQ((uintptr_t)t->data % align, 0u) << "mmap is page aligned, so data is too";
        ASSERT_EQ(t->n_bytes, ts[i].data.size());
        EXPECT_EQ(memcmp(t->data, ts[i].data.data(), t->n_bytes), 0) << t->name;
    }
    tm_gguf_close(g);

    // the memory variant reads the same bytes the same way
    Bytes file = read_file(path);
    Opened o(file);
    ASSERT_EQ(o.rc, 0) << o.err;
    EXPECT_EQ(tm_gguf_n_tensors(o.g), (int64_t)ts.size());
    remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Alignments, WriterAlign, testing::Values(1u, 32u, 64u, 4096u));

TEST(GgufWriter, RejectsBadInput) {
    EXPECT_EQ(tm_gguf_writer_create(0), nullptr);
    EXPECT_EQ(tm_gguf_writer_create(48), nullptr);
    tm_gguf_writer *w = tm_gguf_writer_create(64);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "a", 1), 0);
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "a", 2), TM_EINVAL);       // duplicate
    EXPECT_EQ(tm_gguf_writer_add_str(w, "a", "x"), TM_EINVAL);     // duplicate, other type
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "", 2), TM_EINVAL);
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "general.alignment", 32), TM_EINVAL);  // disagrees
    EXPECT_EQ(tm_gguf_writer_add_f32(w, "general.alignment", 64), TM_EINVAL);  // wrong type
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "general.alignment", 64), 0);
    EXPECT_EQ(tm_gguf_writer_add_arr(w, "s", TM_GGUF_STRING, "x", 1), TM_EINVAL);
    Bytes junk = kv_u32("r", 1);
    junk.push_back(0);  // trailing byte
    EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, junk.data(), junk.size()), TM_EINVAL);
    junk.resize(junk.size() - 3);  // truncated value
    EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, junk.data(), junk.size()), TM_EINVAL);
    Bytes dup = kv_u32("a", 5);
    EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, dup.data(), dup.size()), TM_EINVAL);

    float x[64] = {0};
    int64_t ne[4] = {8, 2, 1, 1};
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "t", 2, ne, TM_DTYPE_F32, x, 64), 0);
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "t", 2, ne, TM_DTYPE_F32, x, 64), TM_EINVAL);   // dup
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "u", 2, ne, TM_DTYPE_F32, x, 60), TM_EINVAL);   // size
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "u", 0, ne, TM_DTYPE_F32, x, 32), TM_EINVAL);   // dims
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "u", 5, ne, TM_DTYPE_F32, x, 64), TM_EINVAL);
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "u", 2, ne, TM_DTYPE_Q8_0, x, 34), TM_EINVAL);  // 8 % 32
    EXPECT_EQ(tm_gguf_writer_add_tensor(w, "u", 2, ne, (tm_dtype)99, x, 64), TM_EINVAL);

    // what was accepted still makes a valid file with exactly one alignment key
    std::string path = tmp_path("reject.gguf");
    char err[256];
    ASSERT_EQ(tm_gguf_writer_write(w, path.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);
    tm_gguf *g;
    ASSERT_EQ(tm_gguf_open(path.c_str(), &g, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_n_keys(g), 2);
    EXPECT_EQ(tm_gguf_alignment(g), 64u);
    EXPECT_EQ(tm_gguf_n_tensors(g), 1);
    tm_gguf_close(g);
    remove(path.c_str());
}

TEST(GgufWriter, StreamingOrderAndCleanup) {
    std::string path = tmp_path("stream.gguf");
    char err[256];
    int64_t ne[4] = {4, 2, 1, 1};
    float rows[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    ASSERT_EQ(tm_gguf_writer_add_tensor_info(w, "a", 2, ne, TM_DTYPE_F32), 0);
    ASSERT_EQ(tm_gguf_writer_add_tensor_info(w, "b", 1, ne, TM_DTYPE_F32), 0);
    EXPECT_EQ(tm_gguf_writer_append(w, rows, 16, err, sizeof err), TM_EINVAL);  // before begin
    EXPECT_EQ(tm_gguf_writer_write(w, path.c_str(), err, sizeof err), TM_EINVAL);  // no data
    EXPECT_NE(strstr(err, "without data"), nullptr) << err;
    ASSERT_EQ(tm_gguf_writer_begin(w, path.c_str(), err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "late", 1), TM_EINVAL);  // metadata is written already
    ASSERT_EQ(tm_gguf_writer_append(w, rows, 16, err, sizeof err), 0);
    EXPECT_EQ(tm_gguf_writer_append(w, rows, 20, err, sizeof err), TM_EINVAL);  // past 'a'
    EXPECT_NE(strstr(err, "tensor 'a'"), nullptr) << err;
    ASSERT_EQ(tm_gguf_writer_append(w, rows + 4, 16, err, sizeof err), 0);
    EXPECT_EQ(tm_gguf_writer_finish(w, err, sizeof err), TM_EINVAL);  // 'b' missing
    EXPECT_NE(strstr(err, "tensor 'b'"), nullptr) << err;
    tm_gguf_writer_destroy(w);
    EXPECT_NE(access(path.c_str(), F_OK), 0) << "partial file removed";

    w = tm_gguf_writer_create(32);
    ASSERT_EQ(tm_gguf_writer_add_tensor_info(w, "a", 2, ne, TM_DTYPE_F32), 0);
    ASSERT_EQ(tm_gguf_writer_begin(w, path.c_str(), err, sizeof err), 0) << err;
    for (int i = 0; i < 8; i++) ASSERT_EQ(tm_gguf_writer_append(w, rows + i, 4, err, sizeof err), 0);
    EXPECT_EQ(tm_gguf_writer_append(w, rows, 4, err, sizeof err), TM_EINVAL);  // after the last
    ASSERT_EQ(tm_gguf_writer_finish(w, err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);
    tm_gguf *g;
    ASSERT_EQ(tm_gguf_open(path.c_str(), &g, err, sizeof err), 0) << err;
    EXPECT_EQ(memcmp(tm_gguf_find_tensor(g, "a")->data, rows, 32), 0);
    tm_gguf_close(g);
    remove(path.c_str());
}

// The in-memory image holds exactly the bytes the file would: same keys, same tensors at
// the same offsets, and tm_gguf_writer_total_bytes is the file's size.
TEST(GgufWriter, MemoryImageEqualsTheFile) {
    const int64_t ne_m[4] = {64, 3, 1, 1}, ne_v[4] = {5, 1, 1, 1};
    std::vector<uint8_t> q8((size_t)tm_dtype_row_bytes(TM_DTYPE_Q8_0, 64) * 3);
    float v[5] = {1, -2, 3.5f, 0, 7};
    for (size_t i = 0; i < q8.size(); i++) q8[i] = (uint8_t)(i * 37 + 11);
    auto make = [&](uint32_t align) {
        tm_gguf_writer *w = tm_gguf_writer_create(align);
        EXPECT_EQ(tm_gguf_writer_add_str(w, "general.name", "image"), 0);
        EXPECT_EQ(tm_gguf_writer_add_u32(w, "k.u32", 9), 0);
        EXPECT_EQ(tm_gguf_writer_add_tensor_info(w, "m", 2, ne_m, TM_DTYPE_Q8_0), 0);
        EXPECT_EQ(tm_gguf_writer_add_tensor_info(w, "v", 1, ne_v, TM_DTYPE_F32), 0);
        return w;
    };
    for (uint32_t align : {32u, 64u}) {
        char err[256];
        std::string path = tmp_path("image.gguf");
        tm_gguf_writer *wf = make(align), *wm = make(align);
        uint64_t total = tm_gguf_writer_total_bytes(wf);
        ASSERT_EQ(tm_gguf_writer_begin(wf, path.c_str(), err, sizeof err), 0) << err;
        ASSERT_EQ(tm_gguf_writer_begin_memory(wm, err, sizeof err), 0) << err;
        EXPECT_EQ(tm_gguf_writer_begin_memory(wm, err, sizeof err), TM_EINVAL);  // twice
        for (tm_gguf_writer *w : {wf, wm}) {
            ASSERT_EQ(tm_gguf_writer_append(w, q8.data(), 100, err, sizeof err), 0) << err;
            ASSERT_EQ(tm_gguf_writer_append(w, q8.data() + 100, q8.size() - 100, err, sizeof err), 0);
            ASSERT_EQ(tm_gguf_writer_append(w, v, sizeof v, err, sizeof err), 0) << err;
        }
        ASSERT_EQ(tm_gguf_writer_finish(wf, err, sizeof err), 0) << err;
        EXPECT_EQ(tm_gguf_writer_finish(wm, err, sizeof err), TM_EINVAL);  // a file call
        tm_gguf *gm = nullptr, *gf = nullptr;
        ASSERT_EQ(tm_gguf_writer_finish_memory(wm, &gm, err, sizeof err), 0) << err;
        tm_gguf_writer_destroy(wf);
        tm_gguf_writer_destroy(wm);  // the image now belongs to gm
        Bytes file = read_file(path);
        EXPECT_EQ(file.size(), total);
        ASSERT_EQ(tm_gguf_open(path.c_str(), &gf, err, sizeof err), 0) << err;
        EXPECT_EQ(tm_gguf_alignment(gm), align);
        ASSERT_EQ(tm_gguf_n_keys(gm), tm_gguf_n_keys(gf));
        for (int64_t i = 0; i < tm_gguf_n_keys(gf); i++) {
            const void *a, *b;
            size_t na, nb;
            ASSERT_EQ(tm_gguf_key_raw(gf, i, &a, &na), 0);
            ASSERT_EQ(tm_gguf_key_raw(gm, i, &b, &nb), 0);
            ASSERT_EQ(na, nb);
            EXPECT_EQ(memcmp(a, b, na), 0) << "key " << i;
        }
        ASSERT_EQ(tm_gguf_n_tensors(gm), 2);
        for (int64_t i = 0; i < 2; i++) {
            const tm_gguf_tensor *a = tm_gguf_tensor_at(gf, i), *b = tm_gguf_tensor_at(gm, i);
            EXPECT_STREQ(a->name, b->name);
            EXPECT_EQ(a->offset, b->offset);
            EXPECT_EQ(b->offset % align, 0u);
            ASSERT_EQ(a->n_bytes, b->n_bytes);
            EXPECT_EQ(memcmp(a->data, b->data, a->n_bytes), 0) << a->name;
        }
        tm_gguf_close(gf);
        tm_gguf_close(gm);
        remove(path.c_str());
    }
}

TEST(GgufWriter, MemoryImageErrors) {
    char err[256];
    const int64_t ne[4] = {4, 2, 1, 1};
    float rows[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    ASSERT_EQ(tm_gguf_writer_add_tensor_info(w, "a", 2, ne, TM_DTYPE_F32), 0);
    tm_gguf *g = nullptr;
    EXPECT_EQ(tm_gguf_writer_finish_memory(w, &g, err, sizeof err), TM_EINVAL);  // not begun
    ASSERT_EQ(tm_gguf_writer_begin_memory(w, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_writer_add_u32(w, "late", 1), TM_EINVAL);
    EXPECT_EQ(tm_gguf_writer_append(w, rows, 36, err, sizeof err), TM_EINVAL);  // past 'a'
    EXPECT_NE(strstr(err, "tensor 'a'"), nullptr) << err;
    ASSERT_EQ(tm_gguf_writer_append(w, rows, 16, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_writer_finish_memory(w, &g, err, sizeof err), TM_EINVAL);  // half of 'a'
    EXPECT_NE(strstr(err, "only 16 of 32"), nullptr) << err;
    EXPECT_EQ(g, nullptr);
    tm_gguf_writer_destroy(w);  // begun, never finished: unmaps (ASan/valgrind see a leak otherwise)
}

}  // namespace
