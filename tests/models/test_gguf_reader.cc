// test_gguf_reader.cc - the GGUF reader (models/gguf.c): every metadata type and
// version from hand-built files, alignment, corrupt and truncated files, the real model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gguf_test_util.h"

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/gguf.h"
}

namespace {

// --- reading hand-built files --------------------------------------------------------

Spec all_types_spec(uint32_t version) {
    Spec s;
    s.version = version;
    s.kvs.push_back(kv("t.u8", TM_GGUF_UINT8, B().u8(200).b));
    s.kvs.push_back(kv("t.i8", TM_GGUF_INT8, B().u8((uint8_t)-5).b));
    s.kvs.push_back(kv("t.u16", TM_GGUF_UINT16, B().u16(60000).b));
    s.kvs.push_back(kv("t.i16", TM_GGUF_INT16, B().u16((uint16_t)-300).b));
    s.kvs.push_back(kv("t.u32", TM_GGUF_UINT32, B().u32(4000000000u).b));
    s.kvs.push_back(kv("t.i32", TM_GGUF_INT32, B().u32((uint32_t)-70000).b));
    s.kvs.push_back(kv("t.f32", TM_GGUF_FLOAT32, B().f32(1.5f).b));
    s.kvs.push_back(kv("t.bool", TM_GGUF_BOOL, B().u8(1).b));
    s.kvs.push_back(kv("t.str", TM_GGUF_STRING, B().str(std::string("ab\0cd", 5)).b));
    s.kvs.push_back(kv("t.u64", TM_GGUF_UINT64, B().u64(1ull << 40).b));
    s.kvs.push_back(kv("t.i64", TM_GGUF_INT64, B().u64((uint64_t)-(1ll << 40)).b));
    s.kvs.push_back(kv("t.f64", TM_GGUF_FLOAT64, B().f64(-2.25).b));
    s.kvs.push_back(kv("t.arr_i16", TM_GGUF_ARRAY, B().u32(TM_GGUF_INT16).u64(3).u16(1).u16(2).u16((uint16_t)-3).b));
    s.kvs.push_back(kv("t.arr_str", TM_GGUF_ARRAY, B().u32(TM_GGUF_STRING).u64(3).str("x").str("").str("hello").b));
    s.kvs.push_back(kv("t.arr_empty", TM_GGUF_ARRAY, B().u32(TM_GGUF_FLOAT32).u64(0).b));
    // [[1, 2], ["s"]]
    s.kvs.push_back(kv("t.arr_arr", TM_GGUF_ARRAY,
                       B().u32(TM_GGUF_ARRAY).u64(2).u32(TM_GGUF_UINT8).u64(2).u8(1).u8(2)
                           .u32(TM_GGUF_STRING).u64(1).str("s").b));
    s.tensors.push_back({"w", 2, {4, 3}, TM_DTYPE_F32, 0});
    B d;
    for (int i = 0; i < 12; i++) d.f32((float)i * 0.5f);
    s.data = d.b;
    return s;
}

class AllTypes : public testing::TestWithParam<uint32_t> {};

TEST_P(AllTypes, EveryMetadataTypeReads) {
    Spec s = all_types_spec(GetParam());
    Bytes file = build(s);
    Opened o(file);
    ASSERT_EQ(o.rc, 0) << o.err;
    tm_gguf *g = o.g;
    EXPECT_EQ(tm_gguf_version(g), GetParam());
    EXPECT_EQ(tm_gguf_alignment(g), 32u);
    ASSERT_EQ(tm_gguf_n_keys(g), (int64_t)s.kvs.size());

    const tm_gguf_type want_types[] = {TM_GGUF_UINT8,  TM_GGUF_INT8,    TM_GGUF_UINT16,  TM_GGUF_INT16,
                                       TM_GGUF_UINT32, TM_GGUF_INT32,   TM_GGUF_FLOAT32, TM_GGUF_BOOL,
                                       TM_GGUF_STRING, TM_GGUF_UINT64,  TM_GGUF_INT64,   TM_GGUF_FLOAT64,
                                       TM_GGUF_ARRAY,  TM_GGUF_ARRAY,   TM_GGUF_ARRAY,   TM_GGUF_ARRAY};
    for (int64_t i = 0; i < tm_gguf_n_keys(g); i++) {
        EXPECT_EQ(tm_gguf_key_type(g, i), want_types[i]) << i;
        // raw bytes are exactly the entry as built
        const void *raw;
        size_t n;
        ASSERT_EQ(tm_gguf_key_raw(g, i, &raw, &n), 0);
        EXPECT_EQ(Bytes((const uint8_t *)raw, (const uint8_t *)raw + n), s.kvs[i]) << i;
        EXPECT_EQ(tm_gguf_find_key(g, tm_gguf_key_name(g, i)), i);
    }
    EXPECT_EQ(tm_gguf_find_key(g, "t.nope"), -1);

    uint32_t u;
    int64_t v;
    float f;
    int bl;
    EXPECT_EQ(tm_gguf_get_u32(g, "t.u8", &u), 0); EXPECT_EQ(u, 200u);
    EXPECT_EQ(tm_gguf_get_u32(g, "t.u16", &u), 0); EXPECT_EQ(u, 60000u);
    EXPECT_EQ(tm_gguf_get_u32(g, "t.u32", &u), 0); EXPECT_EQ(u, 4000000000u);
    EXPECT_EQ(tm_gguf_get_u32(g, "t.i8", &u), TM_EFORMAT);  // negative does not fit
    EXPECT_EQ(tm_gguf_get_u32(g, "t.u64", &u), TM_EFORMAT); // too big for u32
    EXPECT_EQ(tm_gguf_get_i64(g, "t.i8", &v), 0); EXPECT_EQ(v, -5);
    EXPECT_EQ(tm_gguf_get_i64(g, "t.i16", &v), 0); EXPECT_EQ(v, -300);
    EXPECT_EQ(tm_gguf_get_i64(g, "t.i32", &v), 0); EXPECT_EQ(v, -70000);
    EXPECT_EQ(tm_gguf_get_i64(g, "t.u64", &v), 0); EXPECT_EQ(v, 1ll << 40);
    EXPECT_EQ(tm_gguf_get_i64(g, "t.i64", &v), 0); EXPECT_EQ(v, -(1ll << 40));
    EXPECT_EQ(tm_gguf_get_i64(g, "t.f32", &v), TM_EFORMAT);
    EXPECT_EQ(tm_gguf_get_f32(g, "t.f32", &f), 0); EXPECT_EQ(f, 1.5f);
    EXPECT_EQ(tm_gguf_get_f32(g, "t.f64", &f), 0); EXPECT_EQ(f, -2.25f);
    EXPECT_EQ(tm_gguf_get_f32(g, "t.u32", &f), TM_EFORMAT);
    EXPECT_EQ(tm_gguf_get_bool(g, "t.bool", &bl), 0); EXPECT_EQ(bl, 1);
    EXPECT_EQ(tm_gguf_get_bool(g, "t.u8", &bl), TM_EFORMAT);
    EXPECT_EQ(tm_gguf_get_u32(g, "missing", &u), TM_ENOTFOUND);

    const char *str;
    size_t len;
    ASSERT_EQ(tm_gguf_get_str(g, "t.str", &str, &len), 0);
    EXPECT_EQ(std::string(str, len), std::string("ab\0cd", 5));
    EXPECT_EQ(str[len], '\0');
    EXPECT_EQ(tm_gguf_get_str(g, "t.u8", &str, &len), TM_EFORMAT);

    tm_gguf_type et;
    uint64_t n;
    const void *data;
    ASSERT_EQ(tm_gguf_get_arr(g, "t.arr_i16", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_INT16);
    ASSERT_EQ(n, 3u);
    int16_t vals[3];
    memcpy(vals, data, sizeof vals);
    EXPECT_EQ(vals[0], 1); EXPECT_EQ(vals[1], 2); EXPECT_EQ(vals[2], -3);
    ASSERT_EQ(tm_gguf_get_arr(g, "t.arr_empty", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_FLOAT32); EXPECT_EQ(n, 0u);
    ASSERT_EQ(tm_gguf_get_arr(g, "t.arr_arr", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_ARRAY); EXPECT_EQ(n, 2u);
    EXPECT_EQ(tm_gguf_get_arr(g, "t.str", &et, &n, &data), TM_EFORMAT);

    ASSERT_EQ(tm_gguf_get_arr(g, "t.arr_str", &et, &n, &data), 0);
    EXPECT_EQ(et, TM_GGUF_STRING); EXPECT_EQ(n, 3u);
    const char *want[] = {"x", "", "hello"};
    for (uint64_t i = 0; i < 3; i++) {
        ASSERT_EQ(tm_gguf_get_arr_str(g, "t.arr_str", i, &str, &len), 0);
        EXPECT_EQ(std::string(str, len), want[i]);
        EXPECT_STREQ(str, want[i]);
    }
    EXPECT_EQ(tm_gguf_get_arr_str(g, "t.arr_str", 3, &str, &len), TM_ERANGE);
    EXPECT_EQ(tm_gguf_get_arr_str(g, "t.arr_i16", 0, &str, &len), TM_EFORMAT);
    EXPECT_EQ(tm_gguf_get_arr_str(g, "t.arr_arr", 0, &str, &len), TM_EFORMAT);

    ASSERT_EQ(tm_gguf_n_tensors(g), 1);
    const tm_gguf_tensor *t = tm_gguf_find_tensor(g, "w");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t, tm_gguf_tensor_at(g, 0));
    EXPECT_STREQ(t->name, "w");
    EXPECT_EQ(t->n_dims, 2);
    EXPECT_EQ(t->ne[0], 4); EXPECT_EQ(t->ne[1], 3); EXPECT_EQ(t->ne[2], 1); EXPECT_EQ(t->ne[3], 1);
    EXPECT_EQ(t->type, TM_DTYPE_F32);
    EXPECT_EQ(t->n_bytes, 48u);
    EXPECT_EQ((const uint8_t *)t->data, o.buf.data() + (file.size() - 48));
    EXPECT_EQ(memcmp(t->data, s.data.data(), 48), 0);
    EXPECT_EQ(tm_gguf_find_tensor(g, "nope"), nullptr);
    EXPECT_EQ(tm_gguf_tensor_at(g, 1), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Versions, AllTypes, testing::Values(2u, 3u));

TEST(GgufRead, AlignmentKeyMovesTheDataSection) {
    Spec s = small_spec();
    s.kvs.push_back(kv_u32("general.alignment", 256));
    s.alignment = 256;
    s.tensors[1].offset = 256;
    Bytes d(256 + 68, 0);
    for (size_t i = 0; i < d.size(); i++) d[i] = (uint8_t)i;
    s.data = d;
    Bytes file = build(s);
    EXPECT_EQ((file.size() - d.size()) % 256, 0u);
    Opened o(file);
    ASSERT_EQ(o.rc, 0) << o.err;
    EXPECT_EQ(tm_gguf_alignment(o.g), 256u);
    const tm_gguf_tensor *b = tm_gguf_find_tensor(o.g, "b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ((const uint8_t *)b->data, o.buf.data() + file.size() - 68);
    // offsets must follow the file's alignment, not the default one
    s.tensors[1].offset = 32;
    expect_fail(build(s), TM_EFORMAT, "data offset 32 is not a multiple of the alignment 256");
}

TEST(GgufRead, NoTensorsNoDataSection) {
    Spec s;
    s.kvs.push_back(kv_u32("x", 1));
    s.alignment = 1;  // no padding at all after the header
    Opened o(build(s));
    ASSERT_EQ(o.rc, 0) << o.err;
    EXPECT_EQ(tm_gguf_n_tensors(o.g), 0);
}

// --- corrupt files ------------------------------------------------------------------

TEST(GgufCorrupt, EveryPrefixFailsCleanly) {
    for (int with_tensors = 0; with_tensors < 2; with_tensors++) {
        Spec s = with_tensors ? small_spec() : all_types_spec(3);
        if (!with_tensors) {
            s.tensors.clear();
            s.data.clear();
            s.alignment = 1;
        }
        Bytes file = build(s);
        {
            Opened full(file);
            ASSERT_EQ(full.rc, 0) << full.err;
        }
        for (size_t n = 0; n < file.size(); n++) {
            Opened o(Bytes(file.begin(), file.begin() + n));
            ASSERT_EQ(o.rc, TM_EFORMAT) << "prefix " << n << ": " << o.err;
            EXPECT_TRUE(strstr(o.err, "truncated") || strstr(o.err, "past end") ||
                        strstr(o.err, "impossible") || strstr(o.err, "magic") ||
                        strstr(o.err, "does not fit"))
                << "prefix " << n << ": " << o.err;
        }
    }
}

TEST(GgufCorrupt, Header) {
    Bytes f = build(small_spec());
    Bytes bad = f;
    bad[0] = 'X';
    expect_fail(bad, TM_EFORMAT, "magic");
    Spec s = small_spec();
    s.version = 1;
    expect_fail(build(s), TM_EFORMAT, "version 1");
    s.version = 99;
    expect_fail(build(s), TM_EFORMAT, "version 99");
    s.version = 0x03000000;
    expect_fail(build(s), TM_EFORMAT, "big-endian");
    s = small_spec();
    s.n_kv = INT64_MAX;
    expect_fail(build(s), TM_EFORMAT, "n_kv");
    s = small_spec();
    s.n_tensors = INT64_MAX;
    expect_fail(build(s), TM_EFORMAT, "n_tensors");
    s = small_spec();
    s.n_tensors = 3;  // plausible count, but the third tensor info is not there
    expect_fail(build(s), TM_EFORMAT, "tensor 2");
}

TEST(GgufCorrupt, Metadata) {
    Spec s = small_spec();
    s.kvs[0] = B().u64(~0ull).raw("x", 1).b;  // key length 2^64-1
    expect_fail(build(s), TM_EFORMAT, "string length");
    s = small_spec();
    s.kvs[1] = kv("t.str", TM_GGUF_STRING, B().u64(1ull << 62).b);
    expect_fail(build(s), TM_EFORMAT, "string length");
    s = small_spec();
    s.kvs[1] = kv("t.bad", 13, B().u32(0).b);
    expect_fail(build(s), TM_EFORMAT, "bad value type 13");
    s = small_spec();
    s.kvs[1] = kv("t.arr", TM_GGUF_ARRAY, B().u32(77).u64(1).u32(0).b);
    expect_fail(build(s), TM_EFORMAT, "bad array element type 77");
    s = small_spec();
    s.kvs[1] = kv("t.arr", TM_GGUF_ARRAY, B().u32(TM_GGUF_UINT64).u64(1ull << 61).b);
    expect_fail(build(s), TM_EFORMAT, "array count");
    s = small_spec();
    s.kvs[1] = kv("t.arr", TM_GGUF_ARRAY, B().u32(TM_GGUF_STRING).u64(~0ull / 2).b);
    expect_fail(build(s), TM_EFORMAT, "array count");
    s = small_spec();  // the count of an inner array is checked as well
    s.kvs[1] = kv("t.arr", TM_GGUF_ARRAY,
                  B().u32(TM_GGUF_ARRAY).u64(1).u32(TM_GGUF_UINT64).u64(1ull << 61).b);
    expect_fail(build(s), TM_EFORMAT, "array count 2305843009213693952 does not fit");
    s = small_spec();
    s.kvs[1] = kv_str("general.architecture", "other");
    expect_fail(build(s), TM_EFORMAT, "duplicate key 'general.architecture'");
    s = small_spec();
    s.kvs[1] = kv_u32("", 1);
    expect_fail(build(s), TM_EFORMAT, "empty name");
    s = small_spec();
    s.kvs[1] = kv_u32(std::string("a\0b", 3), 1);
    expect_fail(build(s), TM_EFORMAT, "NUL");
    s = small_spec();
    s.kvs[1] = kv_u32("a\nb", 1);
    expect_fail(build(s), TM_EFORMAT, "control byte 0x0a");
    s = small_spec();
    s.tensors[0].name = "x\ty";
    expect_fail(build(s), TM_EFORMAT, "tensor 0 name: name contains control byte 0x09");
    // arrays nested 9 deep
    B nest;
    for (int i = 0; i < 9; i++) nest.u32(TM_GGUF_ARRAY).u64(1);
    nest.u32(TM_GGUF_UINT8).u64(0);
    s = small_spec();
    s.kvs[1] = kv("t.deep", TM_GGUF_ARRAY, nest.b);
    expect_fail(build(s), TM_EFORMAT, "nested deeper");
    B ok;  // 8 levels are fine
    for (int i = 0; i < 7; i++) ok.u32(TM_GGUF_ARRAY).u64(1);
    ok.u32(TM_GGUF_UINT8).u64(0);
    s.kvs[1] = kv("t.deep", TM_GGUF_ARRAY, ok.b);
    EXPECT_EQ(Opened(build(s)).rc, 0);
    // alignment: wrong type, zero, not a power of two
    s = small_spec();
    s.kvs.push_back(kv("general.alignment", TM_GGUF_UINT64, B().u64(32).b));
    expect_fail(build(s), TM_EFORMAT, "expected u32");
    s = small_spec();
    s.kvs.push_back(kv_u32("general.alignment", 0));
    expect_fail(build(s), TM_EFORMAT, "power of two");
    s = small_spec();
    s.kvs.push_back(kv_u32("general.alignment", 48));
    expect_fail(build(s), TM_EFORMAT, "general.alignment = 48 is not a power of two");
}

TEST(GgufCorrupt, Tensors) {
    Spec s = small_spec();
    s.tensors[1].type = 99;
    expect_fail(build(s), TM_EUNSUPPORTED, "tensor 'b': unknown tensor type 99");
    s = small_spec();
    s.tensors[1].type = 16;  // a real ggml type (iq2_xxs) we do not support
    expect_fail(build(s), TM_EUNSUPPORTED, "unknown tensor type 16");
    for (uint32_t nd : {0u, 5u}) {
        s = small_spec();
        s.tensors[0].n_dims = nd;
        s.tensors[0].ne.assign(nd, 1);
        expect_fail(build(s), TM_EFORMAT, ("n_dims " + std::to_string(nd)).c_str());
    }
    s = small_spec();
    s.tensors[0].ne = {8};
    s.tensors[1].ne = {32, 0};
    expect_fail(build(s), TM_EFORMAT, "dimension 1 is 0");
    s = small_spec();
    s.tensors[1].ne = {32, 1ull << 63};
    expect_fail(build(s), TM_EFORMAT, "tensor 'b': dimension 1");
    s = small_spec();  // each dim fits, their product does not
    s.tensors[1].n_dims = 4;
    s.tensors[1].ne = {1ull << 20, 1ull << 20, 1ull << 20, 1ull << 20};
    expect_fail(build(s), TM_EFORMAT, "element count overflows");
    s = small_spec();  // element count fits, byte count does not
    s.tensors[0].n_dims = 2;
    s.tensors[0].ne = {1ull << 32, 1ull << 30};
    expect_fail(build(s), TM_EFORMAT, "byte size overflows");
    s = small_spec();  // one row whose byte count overflows
    s.tensors[0].ne = {1ull << 62};
    expect_fail(build(s), TM_EFORMAT, "tensor 'a': byte size overflows");
    s = small_spec();
    s.tensors[1].ne = {33, 2};
    expect_fail(build(s), TM_EFORMAT, "row length 33 is not a multiple of the q8_0 block size 32");
    s = small_spec();
    s.tensors[1].offset = 4;
    expect_fail(build(s), TM_EFORMAT, "tensor 'b': data offset 4 is not a multiple of the alignment 32");
    s = small_spec();
    s.tensors[1].offset = 64;  // 64 + 68 > 100
    expect_fail(build(s), TM_EFORMAT, "tensor 'b': data [64, +68) past end of file");
    s = small_spec();
    s.tensors[1].offset = ~0ull - 31;  // aligned, and offset + size wraps around
    expect_fail(build(s), TM_EFORMAT, "past end of file");
    s = small_spec();
    s.tensors[1].offset = 0;
    expect_fail(build(s), TM_EFORMAT, "overlap");
    s = small_spec();
    s.tensors[1].name = "a";
    expect_fail(build(s), TM_EFORMAT, "duplicate tensor name 'a'");
    s = small_spec();
    s.tensors[1].name = "";
    expect_fail(build(s), TM_EFORMAT, "empty name");
    s = small_spec();  // header ends before the padding it promises
    Bytes f = build(s);
    f.resize(f.size() - s.data.size() - 1);
    expect_fail(f, TM_EFORMAT, "truncated");
}

TEST(GgufCorrupt, OpenPathErrors) {
    tm_gguf *g = (tm_gguf *)0x1;
    char err[256] = {0};
    EXPECT_EQ(tm_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), TM_EIO);
    EXPECT_EQ(g, nullptr);
    EXPECT_NE(strstr(err, "cannot open"), nullptr) << err;
    EXPECT_EQ(tm_gguf_open("/tmp", &g, err, sizeof err), TM_EIO);
    EXPECT_NE(strstr(err, "not a regular file"), nullptr) << err;
    std::string p = tmp_path("empty.gguf");
    fclose(fopen(p.c_str(), "wb"));
    EXPECT_EQ(tm_gguf_open(p.c_str(), &g, err, sizeof err), TM_EFORMAT);
    EXPECT_NE(strstr(err, "truncated"), nullptr) << err;
    remove(p.c_str());
    tm_gguf_close(nullptr);
}

// --- the real default model ---------------------------------------------------------

TEST(GgufRealModel, SmolLM2) {
    const char *home = getenv("HOME");
    std::string path = std::string(home ? home : "") + "/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(path.c_str(), R_OK) != 0) GTEST_SKIP() << path << " not present (scripts fetch it)";
    tm_gguf *g;
    char err[256];
    ASSERT_EQ(tm_gguf_open(path.c_str(), &g, err, sizeof err), 0) << err;
    const char *arch;
    size_t len;
    ASSERT_EQ(tm_gguf_get_str(g, "general.architecture", &arch, &len), 0);
    EXPECT_STREQ(arch, "llama");
    uint32_t dim, n_layers;
    ASSERT_EQ(tm_gguf_get_u32(g, "llama.embedding_length", &dim), 0);
    EXPECT_EQ(dim, 576u);
    ASSERT_EQ(tm_gguf_get_u32(g, "llama.block_count", &n_layers), 0);
    EXPECT_EQ(n_layers, 30u);
    uint32_t ftype;
    ASSERT_EQ(tm_gguf_get_u32(g, "general.file_type", &ftype), 0);
    EXPECT_EQ(ftype, 3u);  // Q4_1
    tm_gguf_type et;
    uint64_t n_vocab;
    ASSERT_EQ(tm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_vocab, nullptr), 0);
    EXPECT_EQ(et, TM_GGUF_STRING);
    EXPECT_EQ(n_vocab, 49152u);
    EXPECT_GT(tm_gguf_n_tensors(g), 0);
    const tm_gguf_tensor *emb = tm_gguf_find_tensor(g, "token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->n_dims, 2);
    EXPECT_EQ(emb->ne[0], 576);
    EXPECT_EQ(emb->ne[1], (int64_t)n_vocab);
    EXPECT_NE(tm_gguf_find_tensor(g, "blk.29.ffn_down.weight"), nullptr);
    EXPECT_EQ(tm_gguf_find_tensor(g, "blk.30.ffn_down.weight"), nullptr);
    tm_gguf_close(g);
}

}  // namespace
