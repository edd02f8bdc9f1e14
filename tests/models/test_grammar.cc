// Grammar engine: the GBNF parser's errors, acceptance against a reference recognizer on
// random grammars, and the token mask against the definition of an allowed token (the
// text plus the token's bytes is still a prefix of a sentence) on random grammars with a
// vocabulary whose tokens cross terminals and split UTF-8 characters; then the same on the
// default model's real vocabulary with a JSON grammar.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/models/grammar_ref.h"

extern "C" {
#include "common/common.h"
#include "models/gguf.h"
#include "models/grammar.h"
#include "models/tokenizer.h"
}

namespace {

struct Parsed {
    tm_grammar *g = nullptr;
    int rc = 0;
    char err[512] = "";
    explicit Parsed(const std::string &text, const char *root = nullptr) {
        rc = tm_grammar_parse(text.data(), text.size(), root, &g, err, sizeof err);
    }
    ~Parsed() { tm_grammar_destroy(g); }
    bool accepts(const std::string &s) const { return tm_grammar_accepts(g, s.data(), s.size()); }
};

TEST(GrammarParse, ErrorsNameTheProblemAndPlace) {
    struct Case {
        const char *text;
        int rc;
        const char *what;
    } cases[] = {
        {"root ::= \"a", TM_EINVAL, "unterminated string"},
        {"root ::= [a-", TM_EINVAL, "unterminated character class"},
        {"root ::= []", TM_EINVAL, "empty character class"},
        {"root ::= [z-a]", TM_EINVAL, "out of order"},
        {"root ::= (\"a\"", TM_EINVAL, "unclosed '('"},
        {"root ::= \"a\" )", TM_EINVAL, "line 1 column 14: unexpected character )"},
        {"root ::= x", TM_EINVAL, "rule 'x' is used but never defined"},
        {"root ::= \"a\"\nroot ::= \"b\"", TM_EINVAL, "line 2 column 1: rule defined twice: root"},
        {"start ::= \"a\"", TM_EINVAL, "no rule named 'root'"},
        {"root ::= \"\\q\"", TM_EINVAL, "unknown escape \\q"},
        {"root ::= \"\\ud800\"", TM_EINVAL, "not a Unicode scalar value"},
        {"root ::= \"\xff\"", TM_EINVAL, "invalid UTF-8"},
        {"root ::= \"a\"{1001}", TM_ERANGE, "repetition count above 1000"},
        {"root ::= \"a\"{3,2}", TM_EINVAL, "n < m"},
        {"root ::= \"a\"*********", TM_EINVAL, "too many repetition operators"},
        {"root ::= e  e ::= e \"+\" \"1\" | \"1\"", TM_EINVAL, "rule 'e' is left-recursive"},
        {"root ::= a  a ::= b \"x\" | \"z\"  b ::= \"y\"? a", TM_EINVAL, "left-recursive"},
        {"root ::= a  a ::= \"x\" a", TM_EINVAL, "rule 'root' matches no string"},
        {"", TM_EINVAL, "no rules"},
        {"::= \"a\"", TM_EINVAL, "expected a rule name"},
        {"root \"a\"", TM_EINVAL, "expected '::='"},
    };
    for (const Case &c : cases) {
        Parsed p(c.text);
        EXPECT_EQ(p.rc, c.rc) << c.text << " -> " << p.err;
        EXPECT_NE(strstr(p.err, c.what), nullptr) << c.text << ": '" << p.err << "' lacks '" << c.what << "'";
        EXPECT_EQ(p.g, nullptr);
    }
    std::string deep(300, '(');
    deep = "root ::= " + deep + "\"a\"" + std::string(300, ')');
    Parsed p(deep);
    EXPECT_EQ(p.rc, TM_EINVAL);
    EXPECT_NE(strstr(p.err, "nested too deeply"), nullptr) << p.err;
}

TEST(GrammarParse, HandWrittenGrammars) {
    // Rules span lines, comments anywhere, escapes, classes over UTF-8, any character.
    Parsed p(R"(# a list of words
root ::= word ("," ws word)*   # comma separated
word ::= [a-zA-Z\u00e9]+ | "\"" [^"\n]* "\""
ws ::= [ \t]{0,2})");
    ASSERT_EQ(p.rc, 0) << p.err;
    EXPECT_TRUE(p.accepts("abc"));
    EXPECT_TRUE(p.accepts("abc, d,\t\te"));
    EXPECT_TRUE(p.accepts("caf\xc3\xa9,\"any \xe2\x82\xac thing\""));
    EXPECT_FALSE(p.accepts("abc,   d")); // three spaces
    EXPECT_FALSE(p.accepts("\"a\nb\""));
    EXPECT_FALSE(p.accepts(""));
    EXPECT_FALSE(p.accepts("caf\xc3")); // a character cut in half
    Parsed any("root ::= . .");
    ASSERT_EQ(any.rc, 0) << any.err;
    EXPECT_TRUE(any.accepts("a\xf0\x9f\x98\x80"));
    EXPECT_FALSE(any.accepts("a\xed\xa0\x80")); // a surrogate is not a character
    EXPECT_FALSE(any.accepts("a\xc0\xaf"));     // nor an overlong form
    Parsed rep("root ::= \"ab\"{2} \"c\"{1,} \"d\"{,2}");
    ASSERT_EQ(rep.rc, 0) << rep.err;
    EXPECT_TRUE(rep.accepts("ababc"));
    EXPECT_TRUE(rep.accepts("ababcccdd"));
    EXPECT_FALSE(rep.accepts("ababcddd"));
    EXPECT_FALSE(rep.accepts("abc"));
    Parsed other_root("expr ::= \"(\" expr \")\" | \"x\"", "expr");
    ASSERT_EQ(other_root.rc, 0) << other_root.err;
    EXPECT_TRUE(other_root.accepts("((x))"));
    EXPECT_FALSE(other_root.accepts("((x)"));
}

// Random strings over the grammars' alphabet (and a few bytes that are no character).
std::string random_text(std::mt19937 &rng, int max_chars) {
    std::string s;
    int n = (int)(rng() % (unsigned)(max_chars + 1));
    for (int i = 0; i < n; i++) {
        if (rng() % 20 == 0) s += (char)(0x80 + rng() % 0x40); // a stray continuation byte
        else s += gref::utf8(gref::alphabet()[rng() % gref::alphabet().size()]);
    }
    return s;
}

TEST(GrammarRandom, AcceptsExactlyWhatTheReferenceAccepts) {
    int n_accepted = 0, n_checked = 0;
    for (uint32_t seed = 1; seed <= 150; seed++) {
        gref::Gen gen(seed, 1 + seed % 4);
        gref::Grammar g = gen.make();
        std::string text = g.gbnf();
        Parsed p(text);
        ASSERT_EQ(p.rc, 0) << text << "\n" << p.err;
        std::mt19937 rng(seed * 7919);
        gref::Sampler smp(g, seed);
        for (int i = 0; i < 60; i++) {
            std::string s = i % 2 ? random_text(rng, 8) : smp.sentence();
            if (i % 4 == 2 && !s.empty()) s.erase(rng() % s.size(), 1); // near misses
            bool want = g.check(s) == 1;
            ASSERT_EQ(p.accepts(s), want) << text << "input: '" << s << "'";
            n_accepted += want;
            n_checked++;
        }
    }
    // Both answers must be common, or the comparison says little.
    EXPECT_GT(n_accepted, n_checked / 5);
    EXPECT_LT(n_accepted, n_checked * 4 / 5);
}

// ---- vocabularies ----

struct Vocab {
    std::vector<std::string> pieces;
    tm_grammar_vocab *v = nullptr;
    int32_t eog = -1, control = -1;
    ~Vocab() { tm_grammar_vocab_destroy(v); }
    void build(int strip_first_space = 0) {
        std::vector<const char *> p;
        std::vector<size_t> lens;
        std::vector<uint8_t> text;
        for (size_t i = 0; i < pieces.size(); i++) {
            p.push_back(pieces[i].data());
            lens.push_back(pieces[i].size());
            text.push_back((int32_t)i != control);
        }
        char err[256];
        ASSERT_EQ(tm_grammar_vocab_create_pieces((int32_t)pieces.size(), p.data(), lens.data(), text.data(),
                                                 &eog, 1, strip_first_space, &v, err, sizeof err),
                  0)
            << err;
    }
};

// Every byte of the alphabet's characters alone (so any text can be spelled, and UTF-8
// characters can be split across tokens), fragments of sentences (tokens across
// terminals), random runs, an end-of-generation token and a control token.
void random_vocab(Vocab &vb, const gref::Grammar &g, uint32_t seed) {
    std::mt19937 rng(seed);
    std::set<std::string> seen;
    for (uint32_t c : gref::alphabet())
        for (char b : gref::utf8(c)) seen.insert(std::string(1, b));
    gref::Sampler smp(g, seed + 1);
    for (int i = 0; i < 40; i++) {
        std::string s = smp.sentence();
        if (s.empty()) continue;
        size_t a = rng() % s.size(), n = 1 + rng() % 6;
        seen.insert(s.substr(a, n));
    }
    for (int i = 0; i < 40; i++) {
        std::string s = random_text(rng, 3);
        if (!s.empty()) seen.insert(s);
    }
    vb.pieces.assign(seen.begin(), seen.end());
    vb.eog = (int32_t)vb.pieces.size();
    vb.pieces.push_back("</s>");
    vb.control = (int32_t)vb.pieces.size();
    vb.pieces.push_back("a"); // text-looking, but a control token: never allowed
}

struct Matcher {
    tm_grammar_compiled *c = nullptr;
    tm_grammar_matcher *m = nullptr;
    std::vector<uint32_t> mask;
    Matcher(const std::string &text, tm_grammar_vocab *v) {
        tm_grammar *g = nullptr;
        char err[512];
        EXPECT_EQ(tm_grammar_parse(text.data(), text.size(), nullptr, &g, err, sizeof err), 0) << err;
        EXPECT_EQ(tm_grammar_compile(g, v, &c, err, sizeof err), 0) << err;
        EXPECT_EQ(tm_grammar_matcher_create(c, &m), 0);
        mask.resize(tm_grammar_mask_words(tm_grammar_vocab_n_vocab(v)));
    }
    ~Matcher() {
        tm_grammar_matcher_destroy(m);
        tm_grammar_compiled_release(c); // the matcher holds its own reference
    }
    int fill() { return tm_grammar_matcher_fill_mask(m, mask.data()); }
    bool bit(int32_t id) const { return mask[id >> 5] >> (id & 31) & 1; }
};

// At the matcher's position after text: every token's bit is exactly "text + piece is a
// viable prefix", the end token's bit is "text is a sentence", the single-token check
// agrees, and the count is right.
void expect_mask_exact(Matcher &mt, const Vocab &vb, const gref::Grammar &g, const std::string &text,
                       const std::string &gbnf) {
    int n = mt.fill();
    ASSERT_GE(n, 0);
    int count = 0;
    for (int32_t id = 0; id < (int32_t)vb.pieces.size(); id++) {
        bool want;
        if (id == vb.eog) want = g.check(text) == 1;
        else if (id == vb.control) want = false;
        else want = g.check(text + vb.pieces[id]) != 0;
        ASSERT_EQ(mt.bit(id), want) << gbnf << "after '" << text << "' token '" << vb.pieces[id] << "'";
        ASSERT_EQ(tm_grammar_matcher_allows(mt.m, id), (int)want) << "after '" << text << "' token '"
                                                                   << vb.pieces[id] << "'";
        count += want;
    }
    ASSERT_EQ(n, count);
}

TEST(GrammarRandom, MaskIsExactlyTheTokensThatKeepAPrefixViable) {
    int n_steps = 0, n_ended = 0;
    for (uint32_t seed = 1; seed <= 40; seed++) {
        gref::Gen gen(seed * 31, 1 + seed % 4);
        gref::Grammar g = gen.make();
        std::string gbnf = g.gbnf();
        Vocab vb;
        random_vocab(vb, g, seed);
        vb.build();
        std::mt19937 rng(seed);
        gref::Sampler smp(g, seed * 3);
        for (int walk = 0; walk < 4; walk++) {
            Matcher mt(gbnf, vb.v);
            ASSERT_NE(mt.m, nullptr);
            // Even walks spell a sentence with random tokens (every sentence is reachable
            // through allowed tokens); odd walks pick random allowed tokens (no allowed
            // token leads to a dead end: the mask stays exact and non-empty).
            std::string target = walk % 2 == 0 ? smp.sentence() : "", text;
            ASSERT_TRUE(walk % 2 || g.check(target) == 1) << gbnf << "sampled '" << target << "'";
            for (int step = 0; step < 40; step++) {
                expect_mask_exact(mt, vb, g, text, gbnf);
                if (HasFatalFailure()) return;
                n_steps++;
                int32_t pick = -1;
                if (walk % 2 == 0) {
                    if (text.size() == target.size()) {
                        pick = vb.eog;
                    } else {
                        std::vector<int32_t> fit;
                        for (int32_t id = 0; id < vb.eog; id++)
                            if (target.compare(text.size(), vb.pieces[id].size(), vb.pieces[id]) == 0) fit.push_back(id);
                        ASSERT_FALSE(fit.empty());
                        pick = fit[rng() % fit.size()];
                    }
                    ASSERT_TRUE(mt.bit(pick)) << gbnf << "sentence '" << target << "' blocked at '" << text
                                              << "' token '" << vb.pieces[pick] << "'";
                } else {
                    std::vector<int32_t> allowed;
                    for (int32_t id = 0; id < (int32_t)vb.pieces.size(); id++)
                        if (mt.bit(id)) allowed.push_back(id);
                    ASSERT_FALSE(allowed.empty()) << gbnf << "dead end after '" << text << "'";
                    pick = allowed[rng() % allowed.size()];
                }
                ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, pick), 0);
                if (pick == vb.eog) {
                    EXPECT_EQ(g.check(text), 1) << text;
                    EXPECT_TRUE(tm_grammar_matcher_ended(mt.m));
                    n_ended++;
                    break;
                }
                text += vb.pieces[pick];
            }
        }
    }
    EXPECT_GT(n_steps, 1000);
    EXPECT_GT(n_ended, 60); // the sentence walks end at their sentence
}

TEST(GrammarMatcher, RefusedTokenChangesNothingAndTheEndIsTheEnd) {
    Vocab vb;
    vb.pieces = {"{", "}", "\"", "a", "\"a\"", ":", "1", "{\"a\":", "1}"};
    vb.eog = (int32_t)vb.pieces.size();
    vb.pieces.push_back("<eos>");
    vb.build();
    Matcher mt("root ::= \"{\" ( \"\\\"a\\\":\" [0-9]+ )? \"}\"", vb.v);
    ASSERT_NE(mt.m, nullptr);
    EXPECT_EQ(mt.fill(), 2); // "{" and "{\"a\":"
    std::vector<uint32_t> before = mt.mask;
    EXPECT_EQ(tm_grammar_matcher_accept_token(mt.m, 1), TM_EINVAL); // "}" first
    EXPECT_EQ(tm_grammar_matcher_accept_token(mt.m, vb.eog), TM_EINVAL);
    EXPECT_EQ(tm_grammar_matcher_accept_bytes(mt.m, "x", 1), TM_EINVAL);
    mt.fill();
    EXPECT_EQ(mt.mask, before);
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, 7), 0); // {"a":
    EXPECT_FALSE(tm_grammar_matcher_can_end(mt.m));
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, 6), 0); // 1
    mt.fill();
    EXPECT_TRUE(mt.bit(6) && mt.bit(8) && mt.bit(1));
    EXPECT_FALSE(mt.bit(vb.eog));
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, 8), 0); // 1}
    EXPECT_TRUE(tm_grammar_matcher_can_end(mt.m));
    EXPECT_EQ(mt.fill(), 1); // only the end now
    EXPECT_TRUE(mt.bit(vb.eog));
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, vb.eog), 0);
    EXPECT_TRUE(tm_grammar_matcher_ended(mt.m));
    EXPECT_EQ(mt.fill(), 1);
    EXPECT_EQ(tm_grammar_matcher_accept_token(mt.m, 1), TM_EINVAL);
    EXPECT_EQ(tm_grammar_matcher_accept_token(mt.m, -1), TM_EINVAL);
    EXPECT_EQ(tm_grammar_matcher_accept_token(mt.m, 1 << 20), TM_EINVAL);
}

TEST(GrammarMatcher, FirstTokenLosesItsLeadingSpaceWhereTheDetokenizerDropsIt) {
    Vocab vb;
    vb.pieces = {" {", "{", " ", "}", " }"};
    vb.eog = (int32_t)vb.pieces.size();
    vb.pieces.push_back("<eos>");
    vb.build(/*strip_first_space=*/1);
    Matcher mt("root ::= \"{\" \" \"? \"}\"", vb.v);
    ASSERT_NE(mt.m, nullptr);
    mt.fill();
    // " {" is "{" as the first token; " " is "" then, which changes nothing (allowed).
    EXPECT_TRUE(mt.bit(0) && mt.bit(1) && mt.bit(2));
    EXPECT_FALSE(mt.bit(3) || mt.bit(4));
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, 0), 0);
    mt.fill();
    EXPECT_TRUE(mt.bit(2) && mt.bit(3) && mt.bit(4)); // later tokens keep their space
    EXPECT_FALSE(mt.bit(0) || mt.bit(1));
}

TEST(GrammarMatcher, LongAmbiguousGenerationStaysCorrect) {
    // Two parses of every "ab" prefix: the node store grows with dropped paths and is
    // compacted along the way; the answers must not change.
    Vocab vb;
    vb.pieces = {"a", "b", "ab", "aba", "c"};
    vb.eog = (int32_t)vb.pieces.size();
    vb.pieces.push_back("<eos>");
    vb.build();
    Matcher mt("root ::= ( \"ab\" | \"a\" | \"b\" x )* \"c\"  x ::= \"\" | \"a\" x", vb.v);
    ASSERT_NE(mt.m, nullptr);
    for (int i = 0; i < 20000; i++) ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, i % 3 == 2 ? 3 : 2), 0) << i;
    mt.fill();
    for (int32_t id = 0; id < 5; id++) EXPECT_TRUE(mt.bit(id)) << id;
    EXPECT_FALSE(mt.bit(vb.eog));
    ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, 4), 0);
    EXPECT_TRUE(tm_grammar_matcher_can_end(mt.m));
}

// ---- the default model's vocabulary ----

std::string model_path() {
    const char *home = std::getenv("HOME");
    return std::string(home ? home : "") + "/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

const char *kJson = R"(root ::= ws value ws
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws ::= [ \t\n\r]{0,8})";

TEST(GrammarSmol, JsonTextsTokenizedByTheModelPassTheMask) {
    if (access(model_path().c_str(), R_OK) != 0) GTEST_SKIP() << model_path() << " missing (scripts/fetch-model)";
    char err[512];
    tm_gguf *f = nullptr;
    tm_tokenizer *tok = nullptr;
    ASSERT_EQ(tm_gguf_open(model_path().c_str(), &f, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_tokenizer_create(f, &tok, err, sizeof err), 0) << err;
    tm_gguf_close(f);
    tm_grammar_vocab *v = nullptr;
    ASSERT_EQ(tm_grammar_vocab_create(tok, &v, err, sizeof err), 0) << err;
    const int32_t n_vocab = tm_grammar_vocab_n_vocab(v), eos = tm_tokenizer_eos(tok);
    auto t0 = std::chrono::steady_clock::now();
    {
        Matcher mt(kJson, v);
        ASSERT_NE(mt.m, nullptr);
        double compile_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fprintf(stderr, "json grammar compiled over %d tokens in %.3f s\n", n_vocab, compile_s);
    }
    const char *docs[] = {
        "{\"name\": \"Ada Lovelace\", \"born\": 1815, \"tags\": [\"math\", \"poetry\"], \"alive\": false}",
        "[1, -2.5e3, {\"k\": null}, \"caf\xc3\xa9 \\u00e9\\n\", []]",
        "{\n  \"a\": {\"b\": {\"c\": [true, false, null]}},\n  \"emoji\": \"\xf0\x9f\x98\x80\"\n}",
        "\"just a string with \\\"quotes\\\"\"",
        "-0.000001",
    };
    int checked_full = 0;
    for (const char *doc : docs) {
        int32_t *ids = nullptr;
        int n = 0;
        ASSERT_EQ(tm_tokenizer_encode(tok, doc, strlen(doc), 0, 0, &ids, &n), 0);
        Matcher mt(kJson, v);
        std::string text;
        for (int i = 0; i <= n; i++) {
            int32_t id = i < n ? ids[i] : eos;
            ASSERT_GE(mt.fill(), 1);
            ASSERT_TRUE(mt.bit(id)) << doc << ": token " << i << " ('" << (i < n ? "" : "<eos>") << "') refused after '"
                                    << text << "'";
            // At a few positions, the whole mask against the one-token check.
            if (i % 7 == 3) {
                for (int32_t t = 0; t < n_vocab; t++)
                    ASSERT_EQ(mt.bit(t), (bool)tm_grammar_matcher_allows(mt.m, t)) << "token " << t << " after '" << text << "'";
                checked_full++;
            }
            EXPECT_EQ(mt.bit(eos), (bool)tm_grammar_accepts(tm_grammar_compiled_grammar(mt.c), text.data(), text.size()))
                << "end after '" << text << "'";
            if (i < n) {
                size_t len;
                const char *p = tm_tokenizer_piece(tok, id, &len);
                text.append(p, len);
            }
            ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, id), 0);
        }
        free(ids);
    }
    EXPECT_GT(checked_full, 5);

    // A grammar with hundreds of states compiles on several threads (as many as CPUs, up
    // to 8): the merged masks must still be exactly the one-token checks.
    const char *wide = R"(root ::= "\"" ( [^"\\\x00-\x1F] | "\\" ["\\/bfnrt] ){0,40} "\"" ( "," [ \n]{0,8} [a-z0-9]{1,12} )*)";
    Matcher mt(wide, v);
    ASSERT_NE(mt.m, nullptr);
    ASSERT_GT(tm_grammar_n_states(tm_grammar_compiled_grammar(mt.c)), 300);
    std::mt19937 rng(11);
    std::vector<int32_t> allowed;
    for (int step = 0; step < 24; step++) {
        ASSERT_GE(mt.fill(), 1);
        allowed.clear();
        for (int32_t t = 0; t < n_vocab; t++) {
            ASSERT_EQ(mt.bit(t), (bool)tm_grammar_matcher_allows(mt.m, t)) << "token " << t << " at step " << step;
            if (mt.bit(t) && t != eos) allowed.push_back(t);
        }
        if (allowed.empty()) break;
        ASSERT_EQ(tm_grammar_matcher_accept_token(mt.m, allowed[rng() % allowed.size()]), 0);
    }
    tm_grammar_vocab_destroy(v);
    tm_tokenizer_destroy(tok);
}

}  // namespace
