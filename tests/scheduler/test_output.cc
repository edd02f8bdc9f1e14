// Stop strings with hold-back (scheduler/stop.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "scheduler/stop.h"
}

namespace {

struct Stream {               // a tm_stop plus everything it emitted
    tm_stop s{};
    std::string emitted;
    std::vector<char> out;
    bool stopped = false;
    Stream(std::vector<const char *> stops, size_t max_chunk = 64) {
        EXPECT_EQ(tm_stop_init(&s, stops.data(), (int)stops.size(), max_chunk), TM_OK);
        out.resize(tm_stop_out_cap(&s));
    }
    ~Stream() { tm_stop_deinit(&s); }
    std::string push(const std::string &chunk) {
        int st = 0;
        long n = tm_stop_push(&s, chunk.data(), chunk.size(), out.data(), &st);
        EXPECT_GE(n, 0);
        EXPECT_EQ(out[n], '\0');
        std::string d(out.data(), (size_t)n);
        emitted += d;
        stopped = st != 0;
        return d;
    }
    std::string flush() {
        size_t n = tm_stop_flush(&s, out.data());
        std::string d(out.data(), n);
        emitted += d;
        return d;
    }
};

bool utf8_complete(const std::string &s) {
    size_t i = 0;
    while (i < s.size()) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (size_t k = 1; k < n; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
        i += n;
    }
    return true;
}

TEST(Stop, NoStopsPassesThrough) {
    Stream st({});
    EXPECT_EQ(st.push("hello "), "hello ");
    EXPECT_EQ(st.push("world"), "world");
    EXPECT_FALSE(st.stopped);
    EXPECT_EQ(st.flush(), "");
}

TEST(Stop, SpansChunksAndIsHeldBack) {
    Stream st({"</end>"});
    EXPECT_EQ(st.push("hello </e"), "hello ");
    EXPECT_FALSE(st.stopped);
    EXPECT_EQ(st.push("nd> trailing"), "");
    EXPECT_TRUE(st.stopped);
    EXPECT_EQ(st.emitted, "hello ");
}

TEST(Stop, FalseStartIsReleased) {
    Stream st({"<<x"});
    EXPECT_EQ(st.push("a<"), "a");
    EXPECT_EQ(st.push("<"), "");
    EXPECT_EQ(st.push("<y"), "<<<y"); // "<<<" ends in "<<" but "<<<y" has no "<<x"
    EXPECT_FALSE(st.stopped);
    EXPECT_EQ(st.push("<"), "");
    EXPECT_EQ(st.flush(), "<"); // end of stream releases the held partial match
    EXPECT_EQ(st.emitted, "a<<<y<");
}

TEST(Stop, EarliestOfSeveralStopsWins) {
    Stream st({"STOP", "xyz", "op"});
    st.push("abc xy");
    EXPECT_EQ(st.emitted, "abc ");
    st.push("z and STOP");
    EXPECT_TRUE(st.stopped);
    EXPECT_EQ(st.emitted, "abc ");
}

TEST(Stop, MidMultibyteCharacter) {
    // "é!" is C3 A9 21; the token boundary falls inside the é.
    Stream st({"\xC3\xA9!"});
    EXPECT_EQ(st.push("caf\xC3"), "caf");
    EXPECT_EQ(st.push("\xA9!"), "");
    EXPECT_TRUE(st.stopped);
    EXPECT_EQ(st.emitted, "caf");

    // A stop of two 3-byte characters cut at every odd place.
    Stream st2({"\xE6\x97\xA5\xE6\x9C\xAC"}); // 日本
    EXPECT_EQ(st2.push("x\xE6\x97"), "x");
    EXPECT_EQ(st2.push("\xA5\xE6"), "");
    EXPECT_EQ(st2.push("\x9C\xAC tail"), "");
    EXPECT_TRUE(st2.stopped);
    EXPECT_EQ(st2.emitted, "x");

    // No stop involved: a split character is held until it is complete.
    Stream st3({"zz"});
    EXPECT_EQ(st3.push("\xE6\x97"), "");
    EXPECT_EQ(st3.push("\xA5."), "\xE6\x97\xA5.");
    // Same first byte as the stop's character, different character: released whole.
    Stream st4({"\xC3\xA9"}); // é
    EXPECT_EQ(st4.push("\xC3"), "");
    EXPECT_EQ(st4.push("\xA8x"), "\xC3\xA8x"); // è
    EXPECT_FALSE(st4.stopped);
}

TEST(Stop, ChunkTooLargeIsAnError) {
    tm_stop s;
    const char *stops[] = {"ab"};
    ASSERT_EQ(tm_stop_init(&s, stops, 1, 4), TM_OK);
    char out[64];
    int st;
    EXPECT_EQ(tm_stop_push(&s, "abcdef", 6, out, &st), (long)TM_ERANGE);
    tm_stop_deinit(&s);
    const char *empty[] = {""};
    EXPECT_EQ(tm_stop_init(&s, empty, 1, 4), TM_EINVAL);
}

// Random text over ASCII and multi-byte characters, random stop strings cut from it or
// made up, random byte-level chunking. The deltas must add up to the text before the
// earliest stop, never run ahead of it, never split a character, and hold back no more
// than a stop prefix plus one partial character.
TEST(Stop, RandomizedAgainstReference) {
    const std::vector<std::string> alphabet = {"a", "b", " ", "<", "/", "\xC3\xA9", "\xE6\x97\xA5",
                                               "\xF0\x9F\x98\x80", "\n"};
    std::mt19937 rng(42);
    int n_stopped = 0;
    for (int iter = 0; iter < 3000; iter++) {
        std::string text;
        int n_chars = 1 + (int)(rng() % 40);
        for (int i = 0; i < n_chars; i++) text += alphabet[rng() % alphabet.size()];
        std::vector<std::string> stops;
        int n_stop = (int)(rng() % 4);
        for (int i = 0; i < n_stop; i++) {
            std::string s;
            if (rng() % 2) { // a substring on character boundaries, likely to hit
                int len = 1 + (int)(rng() % 4);
                for (int k = 0; k < len; k++) s += alphabet[rng() % alphabet.size()];
            } else {
                size_t a = rng() % text.size(), len = 1 + rng() % 6;
                while (a > 0 && ((unsigned char)text[a] & 0xC0) == 0x80) a--;
                s = text.substr(a, len);
                while (!s.empty() && !utf8_complete(s)) s.pop_back();
                if (s.empty()) s = "<";
            }
            stops.push_back(s);
        }
        // Chunk boundaries first: a stop counts once the text up to a boundary holds it
        // whole, and then the earliest-starting complete match cuts the text.
        std::vector<size_t> ends;
        for (size_t e = 0; e < text.size();) {
            e = std::min(text.size(), e + 1 + rng() % 8);
            ends.push_back(e);
        }
        size_t cut = std::string::npos;
        for (size_t e : ends) {
            for (auto &s : stops) {
                size_t at = text.find(s);
                if (at != std::string::npos && at + s.size() <= e) cut = std::min(cut, at);
            }
            if (cut != std::string::npos) break;
        }
        std::string want = cut == std::string::npos ? text : text.substr(0, cut);
        size_t longest = 0;
        for (auto &s : stops) longest = std::max(longest, s.size());

        std::vector<const char *> ptrs;
        for (auto &s : stops) ptrs.push_back(s.c_str());
        Stream st(ptrs, 8);
        size_t fed = 0;
        for (size_t k = 0; k < ends.size() && !st.stopped; k++) {
            st.push(text.substr(fed, ends[k] - fed));
            fed = ends[k];
            ASSERT_EQ(want.compare(0, st.emitted.size(), st.emitted), 0)
                << "emitted text ran past the stop or changed: iter " << iter;
            ASSERT_TRUE(utf8_complete(st.emitted)) << "split character, iter " << iter;
            if (!st.stopped) {
                ASSERT_LE(fed - st.emitted.size(), std::max(longest, (size_t)1) - 1 + 3)
                    << "held back more than needed, iter " << iter;
            }
        }
        if (!st.stopped) st.flush();
        n_stopped += st.stopped;
        ASSERT_EQ(st.stopped, cut != std::string::npos) << "iter " << iter;
        ASSERT_EQ(st.emitted, want) << "iter " << iter;
    }
    EXPECT_GT(n_stopped, 500);
}

} // namespace

// ---- token path (scheduler/output.h) on the real tokenizer ----

extern "C" {
#include "models/gguf.h"
#include "models/tokenizer.h"
#include "scheduler/output.h"
}

namespace {

class OutputTest : public ::testing::Test {
  protected:
    static tm_tokenizer *tok;
    static size_t max_piece;
    static std::string skip_reason;
    static void SetUpTestSuite() {
        const char *home = getenv("HOME");
        std::string path = std::string(home ? home : "") +
                           "/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf";
        tm_gguf *g = nullptr;
        char err[256] = "";
        if (tm_gguf_open(path.c_str(), &g, err, sizeof err) != TM_OK) {
            skip_reason = "default model not found (" + path + "): " + err;
            return;
        }
        if (tm_tokenizer_create(g, &tok, err, sizeof err) != TM_OK) {
            skip_reason = std::string("tokenizer: ") + err;
            tok = nullptr;
        }
        tm_gguf_close(g);
        if (!tok) return;
        for (int32_t id = 0; id < tm_tokenizer_n_vocab(tok); id++) {
            size_t n = 0;
            tm_tokenizer_piece(tok, id, &n);
            max_piece = std::max(max_piece, n);
        }
    }
    static void TearDownTestSuite() {
        tm_tokenizer_destroy(tok);
        tok = nullptr;
    }
    void SetUp() override {
        if (!tok) GTEST_SKIP() << skip_reason;
    }

    std::vector<int32_t> encode(const std::string &text) {
        int32_t *ids = nullptr;
        int n = 0;
        EXPECT_EQ(tm_tokenizer_encode(tok, text.data(), text.size(), 0, 0, &ids, &n), TM_OK);
        std::vector<int32_t> v(ids, ids + n);
        free(ids);
        return v;
    }

    // Pushes ids through a fresh tm_output; checks after every token that the text so
    // far is a prefix of want (nothing of a stop string ever leaks) and whole UTF-8.
    struct Run {
        std::string text;
        tm_finish finish = TM_FINISH_NONE;
        int n_pushed = 0;
    };
    Run feed(const std::vector<int32_t> &ids, std::vector<const char *> stops,
             std::vector<int32_t> stop_ids, int ignore_eos, int max_tokens, const std::string &want) {
        tm_output o;
        Run r;
        EXPECT_EQ(tm_output_init(&o, tok, max_piece, stops.data(), (int)stops.size(),
                                 stop_ids.data(), (int)stop_ids.size(), ignore_eos, max_tokens),
                  TM_OK);
        std::vector<char> out(tm_output_delta_cap(&o));
        for (int32_t id : ids) {
            size_t n = tm_output_push_token(&o, id, out.data(), &r.finish);
            EXPECT_EQ(strlen(out.data()), n);
            r.text.append(out.data(), n);
            r.n_pushed++;
            EXPECT_EQ(want.compare(0, r.text.size(), r.text), 0)
                << "delta leaked past the expected text: [" << r.text << "]";
            EXPECT_TRUE(utf8_complete(r.text)) << "delta split a character";
            if (r.finish != TM_FINISH_NONE) break;
        }
        tm_output_deinit(&o);
        return r;
    }
};

tm_tokenizer *OutputTest::tok = nullptr;
size_t OutputTest::max_piece = 0;
std::string OutputTest::skip_reason;

// Byte offsets where tokens of text end.
std::vector<size_t> token_ends(const tm_tokenizer *tok, const std::vector<int32_t> &ids) {
    std::vector<size_t> ends;
    size_t at = 0;
    for (int32_t id : ids) {
        size_t n = 0;
        tm_tokenizer_piece(tok, id, &n);
        at += n;
        ends.push_back(at);
    }
    return ends;
}

TEST_F(OutputTest, StopAcrossTokensInsideMultibyteCharacter) {
    // Find a character the vocab splits across tokens (byte-level BPE falls back to
    // byte tokens for rare characters).
    const std::vector<std::string> candidates = {"\xF0\x9F\xA6\x9C", "\xF0\x9F\xA7\xAC", "\xE2\xB1\xAD",
                                                 "\xEA\x99\xAE", "\xF0\x9F\x98\x80", "\xE6\x97\xA5"};
    std::string ch;
    for (auto &c : candidates) {
        std::string text = "Hello " + c + " world";
        auto ids = encode(text);
        for (size_t e : token_ends(tok, ids))
            if (e > 6 && e < 6 + c.size()) ch = c; // a token ends inside the character
        if (!ch.empty()) break;
    }
    ASSERT_FALSE(ch.empty()) << "no candidate character is split across tokens";
    std::string text = "Hello " + ch + " world, and more text after it.";
    auto ids = encode(text);
    ASSERT_EQ(token_ends(tok, ids).back(), text.size()) << "pieces do not add up to the text";

    // The stop string starts before the split character and ends after it.
    std::string stop = "lo " + ch + " w";
    Run r = feed(ids, {stop.c_str()}, {}, 1, 100, "Hel");
    EXPECT_EQ(r.finish, TM_FINISH_STOP);
    EXPECT_EQ(r.text, "Hel");

    // A stop string that starts with the split character itself.
    std::string stop2 = ch + " wor";
    r = feed(ids, {stop2.c_str()}, {}, 1, 100, "Hello ");
    EXPECT_EQ(r.finish, TM_FINISH_STOP);
    EXPECT_EQ(r.text, "Hello ");

    // A stop that never matches but shares the split character's first bytes: all text
    // comes out, the character whole.
    std::string stop3 = ch.substr(0, ch.size() - 1) + "\x80" + "zzz";
    r = feed(ids, {stop3.c_str(), "never"}, {}, 1, (int)ids.size(), text);
    EXPECT_EQ(r.finish, TM_FINISH_LENGTH);
    EXPECT_EQ(r.text, text);
}

TEST_F(OutputTest, HeldTextIsReleasedAtLengthAndEos) {
    std::string text = "The answer is <";
    auto ids = encode(text);
    // "<" could start "<end>", so it is held until max_tokens releases it.
    Run r = feed(ids, {"<end>"}, {}, 0, (int)ids.size(), text);
    EXPECT_EQ(r.finish, TM_FINISH_LENGTH);
    EXPECT_EQ(r.text, text);

    int32_t eos = tm_tokenizer_eos(tok);
    ASSERT_GE(eos, 0);
    ASSERT_TRUE(tm_tokenizer_is_eog(tok, eos));
    std::vector<int32_t> with_eos = ids;
    with_eos.push_back(eos);
    with_eos.push_back(ids[0]); // never reached
    r = feed(with_eos, {"<end>"}, {}, 0, 100, text);
    EXPECT_EQ(r.finish, TM_FINISH_STOP);
    EXPECT_EQ(r.text, text); // the held "<" is released, the EOS text is not emitted
    EXPECT_EQ(r.n_pushed, (int)ids.size() + 1);

    // ignore_eos: generation goes on through the EOS token.
    size_t n_eos = 0, n_first = 0;
    const char *eos_text = tm_tokenizer_piece(tok, eos, &n_eos);
    const char *first = tm_tokenizer_piece(tok, ids[0], &n_first);
    std::string all = text + std::string(eos_text, n_eos) + std::string(first, n_first);
    r = feed(with_eos, {}, {}, 1, (int)with_eos.size(), all);
    EXPECT_EQ(r.text, all);
    EXPECT_EQ(r.finish, TM_FINISH_LENGTH);
    EXPECT_EQ(r.n_pushed, (int)with_eos.size());

    // An extra stop token id stops like EOS.
    r = feed(ids, {}, {ids[2]}, 1, 100, text);
    EXPECT_EQ(r.finish, TM_FINISH_STOP);
    EXPECT_EQ(r.n_pushed, 3);
}

} // namespace
