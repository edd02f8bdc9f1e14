// gguf_test_util.h - what the GGUF reader, writer and converter tests share: a
// hand-rolled byte builder (so the reader is checked against the spec, not only against
// our own writer), a small valid file, and helpers to open bytes and temporary files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/gguf.h"
}

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
inline Bytes kv(const std::string &key, uint32_t type, const Bytes &value) {
    B b;
    b.str(key).u32(type).raw(value.data(), value.size());
    return b.b;
}
inline Bytes kv_u32(const std::string &key, uint32_t v) { return kv(key, TM_GGUF_UINT32, B().u32(v).b); }
inline Bytes kv_str(const std::string &key, const std::string &v) {
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

inline Bytes build(const Spec &s) {
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
inline Spec small_spec() {
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
inline void expect_fail(const Bytes &file, int code, const char *what) {
    Opened o(file);
    EXPECT_EQ(o.rc, code) << "err: " << o.err;
    EXPECT_EQ(o.g, nullptr);
    EXPECT_NE(strstr(o.err, what), nullptr) << "message '" << o.err << "' should mention '" << what << "'";
    EXPECT_EQ(strchr(o.err, '\n'), nullptr) << "one line";
}

inline std::string tmp_path(const char *name) {
    return testing::TempDir() + "tm_gguf_" + std::to_string(getpid()) + "_" + name;
}

inline Bytes read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
