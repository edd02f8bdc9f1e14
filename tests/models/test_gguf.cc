// test_gguf.cc - GGUF reader, writer and converter.
//
// Files are built two ways: with a hand-rolled byte builder (so the reader is checked
// against the spec, not only against our own writer) and with tm_gguf_writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/convert.h"
#include "models/gguf.h"
}

namespace {

typedef std::vector<uint8_t> Bytes;

// --- hand-rolled builder -------------------------------------------------------------

struct B {
    Bytes b;
    B &raw(const void *p, size_t n) {
        b.insert(b.end(), (const uint8_t *)p, (const uint8_t *)p + n);
        return *this;
    }
    B &u8(uint8_t v) { return raw(&v, 1); }
    B &u16(uint16_t v) { return raw(&v, 2); }
    B &u32(uint32_t v) { return raw(&v, 4); }
    B &u64(uint64_t v) { return raw(&v, 8); }
    B &f32(float v) { return raw(&v, 4); }
    B &f64(double v) { return raw(&v, 8); }
    B &str(const std::string &s) { return u64(s.size()).raw(s.data(), s.size()); }
};

// One metadata entry: key, type, then the value bytes the caller gives.
Bytes kv(const std::string &key, uint32_t type, const Bytes &value) {
    B b;
    b.str(key).u32(type).raw(value.data(), value.size());
    return b.b;
}
Bytes kv_u32(const std::string &key, uint32_t v) { return kv(key, TM_GGUF_UINT32, B().u32(v).b); }
Bytes kv_str(const std::string &key, const std::string &v) {
    return kv(key, TM_GGUF_STRING, B().str(v).b);
}

struct HTensor {
    std::string name;
    uint32_t n_dims;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
};

struct Spec {
    uint32_t version = 3;
    int64_t n_tensors = -1;  // override the count in the header (-1: actual)
    int64_t n_kv = -1;
    std::vector<Bytes> kvs;
    std::vector<HTensor> tensors;
    uint64_t alignment = 32;  // header padding only; the key is in kvs if wanted
    Bytes data;
};

Bytes build(const Spec &s) {
    B b;
    b.raw("GGUF", 4).u32(s.version);
    b.u64(s.n_tensors >= 0 ? (uint64_t)s.n_tensors : s.tensors.size());
    b.u64(s.n_kv >= 0 ? (uint64_t)s.n_kv : s.kvs.size());
    for (const Bytes &e : s.kvs) b.raw(e.data(), e.size());
    for (const HTensor &t : s.tensors) {
        b.str(t.name).u32(t.n_dims);
        for (uint64_t n : t.ne) b.u64(n);
        b.u32(t.type).u64(t.offset);
    }
    while (b.b.size() % s.alignment) b.u8(0);
    b.raw(s.data.data(), s.data.size());
    return b.b;
}

// A small valid file: two keys, an f32 vector at 0 and a q8_0 matrix at 32.
Spec small_spec() {
    Spec s;
    s.kvs.push_back(kv_str("general.architecture", "llama"));
    s.kvs.push_back(kv_u32("test.u32", 7));
    s.tensors.push_back({"a", 1, {8}, TM_DTYPE_F32, 0});
    s.tensors.push_back({"b", 2, {32, 2}, TM_DTYPE_Q8_0, 32});
    s.data.resize(32 + 2 * 34);
    for (size_t i = 0; i < s.data.size(); i++) s.data[i] = (uint8_t)(i * 7 + 1);
    return s;
}

// Opens a private copy of the bytes (exactly sized, so ASan catches reads past the end).
struct Opened {
    Bytes buf;
    tm_gguf *g = nullptr;
    int rc = 0;
    char err[256] = {0};
    explicit Opened(const Bytes &b) : buf(b) {
        rc = tm_gguf_open_memory(buf.data(), buf.size(), &g, err, sizeof err);
    }
    ~Opened() { tm_gguf_close(g); }
};

// Expects the file to be refused with code and a message containing what.
void expect_fail(const Bytes &file, int code, const char *what) {
    Opened o(file);
    EXPECT_EQ(o.rc, code) << "err: " << o.err;
    EXPECT_EQ(o.g, nullptr);
    EXPECT_NE(strstr(o.err, what), nullptr) << "message '" << o.err << "' should mention '" << what << "'";
    EXPECT_EQ(strchr(o.err, '\n'), nullptr) << "one line";
}

std::string tmp_path(const char *name) {
    return testing::TempDir() + "tm_gguf_" + std::to_string(getpid()) + "_" + name;
}

Bytes read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

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

// --- writer ------------------------------------------------------------------------

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

// --- converter ----------------------------------------------------------------------

struct SrcTensor {
    const char *name;
    int n_dims;
    int64_t ne[4];
    tm_dtype type;
};

// Tolerance of quantizing a block x to type (absolute, per value).
double block_tolerance(tm_dtype type, const float *x, int n) {
    float amax = 0, mn = x[0], mx = x[0];
    for (int i = 0; i < n; i++) {
        amax = std::max(amax, std::fabs(x[i]));
        mn = std::min(mn, x[i]);
        mx = std::max(mx, x[i]);
    }
    switch (type) {
    case TM_DTYPE_F32: return 0;
    case TM_DTYPE_F16: return amax * 1e-3 + 1e-7;
    case TM_DTYPE_Q8_0: return amax / 127 * 0.6 + 1e-7;
    case TM_DTYPE_Q4_0: return amax / 8 * 1.05 + 1e-7;  // +8 clamps to 7: up to one step
    case TM_DTYPE_Q4_1: return (mx - mn) / 15 * 0.6 + std::fabs(mn) * 1e-3 + 1e-7;
    default: return -1;
    }
}

class Convert : public testing::TestWithParam<tm_dtype> {};

TEST_P(Convert, MatchesSourceWithinTolerance) {
    const tm_dtype target = GetParam();
    const std::vector<SrcTensor> src = {
        {"token_embd.weight", 2, {64, 5, 1, 1}, TM_DTYPE_F32},
        {"blk.0.attn_norm.weight", 1, {64, 1, 1, 1}, TM_DTYPE_F32},
        {"blk.0.attn_q.weight", 2, {64, 3, 1, 1}, TM_DTYPE_Q8_0},
        {"blk.0.ffn_up.weight", 2, {32, 4, 1, 1}, TM_DTYPE_Q4_1},
        {"blk.0.odd.weight", 2, {48, 2, 1, 1}, TM_DTYPE_F32},  // 48 % 32 != 0: f16 fallback
        {"blk.0.bias", 1, {16, 1, 1, 1}, TM_DTYPE_F16},
        {"blk.0.cube", 3, {32, 2, 2, 1}, TM_DTYPE_F16},
    };
    // source file, alignment 64 so we see it carried over
    tm_gguf_writer *w = tm_gguf_writer_create(64);
    ASSERT_EQ(tm_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    ASSERT_EQ(tm_gguf_writer_add_u32(w, "general.file_type", 0), 0);
    const char *toks[] = {"<s>", "a", "b"};
    ASSERT_EQ(tm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3), 0);
    ASSERT_EQ(tm_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f), 0);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const SrcTensor &t : src) {
        int64_t n = t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3];
        std::vector<float> v((size_t)n);
        for (auto &x : v) x = nd(rng) * 0.1f + (t.n_dims == 1 ? 1.0f : 0.0f);
        int64_t row = tm_dtype_row_bytes(t.type, t.ne[0]);
        Bytes q((size_t)(row * (n / t.ne[0])));
        for (int64_t r = 0; r < n / t.ne[0]; r++)
            ASSERT_EQ(tm_quantize_row(t.type, v.data() + r * t.ne[0], q.data() + r * row, t.ne[0]), 0);
        if (t.type == TM_DTYPE_Q8_0) {
            // blocks our quantizer would not produce (|q| <= 25, not 127), so a
            // requantizing "copy" would change the bytes
            for (size_t b = 0; b < q.size() / sizeof(tm_block_q8_0); b++) {
                tm_block_q8_0 blk;
                blk.d = tm_f32_to_f16(0.01f * (float)(b + 1));
                for (int j = 0; j < 32; j++) blk.qs[j] = (int8_t)((j * 7 + (int)b) % 51 - 25);
                memcpy(q.data() + b * sizeof blk, &blk, sizeof blk);
            }
        }
        ASSERT_EQ(tm_gguf_writer_add_tensor(w, t.name, t.n_dims, t.ne, t.type, q.data(), q.size()), 0);
    }
    std::string in = tmp_path("conv_in.gguf"), outp = tmp_path("conv_out.gguf");
    char err[256];
    ASSERT_EQ(tm_gguf_writer_write(w, in.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);

    ASSERT_EQ(tm_convert_file(in.c_str(), outp.c_str(), target, err, sizeof err), 0) << err;
    EXPECT_NE(access((outp + ".tmp").c_str(), F_OK), 0) << "temporary file renamed away";
    tm_gguf *a, *b;
    ASSERT_EQ(tm_gguf_open(in.c_str(), &a, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_gguf_open(outp.c_str(), &b, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_alignment(b), 64u);

    // metadata: same keys in the same order, verbatim except general.file_type
    ASSERT_EQ(tm_gguf_n_keys(b), tm_gguf_n_keys(a));
    for (int64_t i = 0; i < tm_gguf_n_keys(a); i++) {
        ASSERT_STREQ(tm_gguf_key_name(b, i), tm_gguf_key_name(a, i));
        if (!strcmp(tm_gguf_key_name(a, i), "general.file_type")) continue;
        const void *ra, *rb;
        size_t na, nb;
        ASSERT_EQ(tm_gguf_key_raw(a, i, &ra, &na), 0);
        ASSERT_EQ(tm_gguf_key_raw(b, i, &rb, &nb), 0);
        EXPECT_EQ(Bytes((const uint8_t *)ra, (const uint8_t *)ra + na), Bytes((const uint8_t *)rb, (const uint8_t *)rb + nb))
            << tm_gguf_key_name(a, i);
    }
    uint32_t ftype;
    ASSERT_EQ(tm_gguf_get_u32(b, "general.file_type", &ftype), 0);
    const int want_ftype = target == TM_DTYPE_F16 ? 1 : target == TM_DTYPE_Q4_0 ? 2 : target == TM_DTYPE_Q4_1 ? 3 : 7;
    EXPECT_EQ((int)ftype, want_ftype);  // llama.cpp's LLAMA_FTYPE_MOSTLY_* ids
    EXPECT_EQ(tm_convert_ftype(target), want_ftype);

    ASSERT_EQ(tm_gguf_n_tensors(b), (int64_t)src.size());
    for (size_t i = 0; i < src.size(); i++) {
        const tm_gguf_tensor *ta = tm_gguf_tensor_at(a, (int64_t)i), *tb = tm_gguf_tensor_at(b, (int64_t)i);
        ASSERT_STREQ(tb->name, ta->name);
        EXPECT_EQ(tb->n_dims, ta->n_dims);
        for (int d = 0; d < 4; d++) EXPECT_EQ(tb->ne[d], ta->ne[d]);
        tm_dtype want = ta->n_dims == 1 ? TM_DTYPE_F32
                        : tm_dtype_row_bytes(target, ta->ne[0]) < 0 ? TM_DTYPE_F16 : target;
        EXPECT_EQ(tb->type, want) << ta->name;
        if (tb->type == ta->type) {  // same type: copied bit for bit
            ASSERT_EQ(tb->n_bytes, ta->n_bytes);
            EXPECT_EQ(memcmp(tb->data, ta->data, ta->n_bytes), 0) << ta->name;
            continue;
        }
        const int64_t ne0 = ta->ne[0], rows = ta->ne[1] * ta->ne[2] * ta->ne[3];
        const int64_t ra = tm_dtype_row_bytes(ta->type, ne0), rb = tm_dtype_row_bytes(tb->type, ne0);
        ASSERT_EQ(tb->n_bytes, (uint64_t)(rb * rows));
        std::vector<float> xa((size_t)ne0), xb((size_t)ne0, NAN);
        for (int64_t r = 0; r < rows; r++) {
            tm_dequantize_row(ta->type, (const uint8_t *)ta->data + r * ra, xa.data(), ne0);
            tm_dequantize_row(tb->type, (const uint8_t *)tb->data + r * rb, xb.data(), ne0);
            const int blk = tm_dtype_block_size(tb->type) > 1 ? 32 : (int)ne0;
            for (int64_t j0 = 0; j0 < ne0; j0 += blk) {
                double tol = block_tolerance(tb->type, xa.data() + j0, blk);
                for (int64_t j = j0; j < j0 + blk; j++)
                    ASSERT_LE(std::fabs((double)xb[j] - xa[j]), tol)
                        << ta->name << " row " << r << " col " << j << " as " << tm_dtype_name(tb->type);
            }
        }
    }
    tm_gguf_close(a);
    tm_gguf_close(b);
    remove(in.c_str());
    remove(outp.c_str());
}

INSTANTIATE_TEST_SUITE_P(Targets, Convert,
                         testing::Values(TM_DTYPE_F16, TM_DTYPE_Q8_0, TM_DTYPE_Q4_0, TM_DTYPE_Q4_1),
                         [](const testing::TestParamInfo<tm_dtype> &p) { return std::string(tm_dtype_name(p.param)); });

TEST(ConvertErrors, UnsupportedTargetAndBadInput) {
    char err[256];
    std::string outp = tmp_path("conv_err.gguf");
    EXPECT_EQ(tm_convert_file("/nonexistent.gguf", outp.c_str(), TM_DTYPE_Q4_K, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(strstr(err, "q4_k"), nullptr) << err;
    EXPECT_EQ(tm_convert_file("/nonexistent.gguf", outp.c_str(), TM_DTYPE_Q8_0, err, sizeof err), TM_EIO);
    std::string bad = tmp_path("conv_bad.gguf");
    Bytes f = build(small_spec());
    f.resize(f.size() - 1);
    std::ofstream(bad, std::ios::binary).write((const char *)f.data(), (std::streamsize)f.size());
    EXPECT_EQ(tm_convert_file(bad.c_str(), outp.c_str(), TM_DTYPE_Q8_0, err, sizeof err), TM_EFORMAT);
    EXPECT_NE(strstr(err, "past end"), nullptr) << err;
    EXPECT_NE(access(outp.c_str(), F_OK), 0);
    EXPECT_NE(access((outp + ".tmp").c_str(), F_OK), 0);
    remove(bad.c_str());
}

TEST(ConvertErrors, InPlaceConversionWorks) {
    // in == out: the source stays mapped while the output goes to a temporary file
    std::string p = tmp_path("conv_inplace.gguf");
    Bytes f = build(small_spec());
    std::ofstream(p, std::ios::binary).write((const char *)f.data(), (std::streamsize)f.size());
    char err[256];
    ASSERT_EQ(tm_convert_file(p.c_str(), p.c_str(), TM_DTYPE_F16, err, sizeof err), 0) << err;
    tm_gguf *g;
    ASSERT_EQ(tm_gguf_open(p.c_str(), &g, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_find_tensor(g, "b")->type, TM_DTYPE_F16);
    EXPECT_EQ(tm_gguf_find_tensor(g, "a")->type, TM_DTYPE_F32);
    uint32_t ft;
    EXPECT_EQ(tm_gguf_get_u32(g, "general.file_type", &ft), 0);  // added: the source had none
    EXPECT_EQ(ft, 1u);
    tm_gguf_close(g);
    remove(p.c_str());
}

}  // namespace
