// Constrained decoding through the engine on the default model: greedy and sampled
// requests under a grammar only ever produce text the grammar allows (complete when they
// stop, a viable prefix when they run out of tokens); the greedy batched-argmax path under
// a mask gives exactly the tokens of the masked host path (its slow reference), alone and
// batched with unconstrained requests.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "scheduler_test_util.h"

extern "C" {
#include "models/grammar.h"
#include "models/tokenizer.h"
}

namespace {

using Out = EngineOutput;

const char *kPerson = R"(root ::= "{" ws "\"name\"" ws ":" ws string "," ws "\"age\"" ws ":" ws age ws "}"
string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ["\\/bfnrt] ){1,20} "\""
age ::= [1-9] [0-9]?
ws ::= [ \n]{0,4})";

class EngineStructured : public DefaultModelTest {
  protected:
    inline static tm_grammar_vocab *vocab = nullptr;
    inline static tm_grammar_compiled *person = nullptr;

    static void SetUpTestSuite() {
        DefaultModelTest::SetUpTestSuite();
        if (!model) return;
        char err[512];
        tm_grammar *g = nullptr;
        if (tm_grammar_vocab_create(tm_model_tokenizer(model), &vocab, err, sizeof err) ||
            tm_grammar_parse(kPerson, strlen(kPerson), nullptr, &g, err, sizeof err) ||
            tm_grammar_compile(g, vocab, &person, err, sizeof err)) {
            skip_reason = std::string("grammar setup failed: ") + err;
            tm_model_destroy(model);
            model = nullptr;
        }
    }
    static void TearDownTestSuite() {
        tm_grammar_compiled_release(person);
        tm_grammar_vocab_destroy(vocab);
        person = nullptr, vocab = nullptr;
        DefaultModelTest::TearDownTestSuite();
    }

    static std::vector<int32_t> prompt(const char *text) {
        int32_t *ids = nullptr;
        int n = 0;
        EXPECT_EQ(tm_tokenizer_encode(tm_model_tokenizer(model), text, strlen(text), 1, 1, &ids, &n), 0);
        std::vector<int32_t> v(ids, ids + n);
        free(ids);
        return v;
    }

    // A request under the person grammar (or none); with_allows = 0 drops the processor's
    // allows hook, which sends the row to the masked host path every step.
    static tm_request request(const std::vector<int32_t> &p, float temperature, uint64_t seed,
                              int constrained, int with_allows, tm_logit_processor *proc) {
        tm_request r;
        memset(&r, 0, sizeof r);
        r.prompt = p.data();
        r.n_prompt = (int)p.size();
        r.max_tokens = 60;
        tm_sampling_params_default(&r.sampling);
        r.sampling.temperature = temperature;
        r.sampling.seed = seed;
        if (constrained) {
            EXPECT_EQ(tm_grammar_processor_create(person, proc), 0);
            if (!with_allows) proc->allows = nullptr;
            r.processors = proc;
            r.n_processors = 1;
        }
        return r;
    }

    static std::vector<Out> run(const std::vector<tm_request> &reqs) {
        tm_engine_config c;
        tm_engine_config_default(&c);
        c.kv_cache_bytes = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16) * 128;
        c.max_num_seqs = 8;
        c.max_num_batched_tokens = 256;
        return run_engine(model, c, reqs);
    }
};

TEST_F(EngineStructured, GreedyAndSampledOutputsFollowTheGrammar) {
    std::vector<int32_t> p = prompt("Write a JSON object describing a person with a name and an age: ");
    std::vector<tm_logit_processor> procs(6);
    std::vector<tm_request> reqs;
    reqs.push_back(request(p, 0.0f, 0, 1, 1, &procs[0]));
    for (int k = 1; k < 6; k++) reqs.push_back(request(p, k < 4 ? 1.0f : 1.5f, 100 + k, 1, 1, &procs[k]));
    std::vector<Out> out = run(reqs);
    ASSERT_EQ(out.size(), reqs.size());
    const tm_grammar *g = tm_grammar_compiled_grammar(person);
    int n_complete = 0;
    for (size_t i = 0; i < out.size(); i++) {
        const Out &o = out[i];
        ASSERT_NE(o.finish, TM_FINISH_ABORT) << i;
        if (o.finish == TM_FINISH_STOP) {
            EXPECT_TRUE(tm_grammar_accepts(g, o.text.data(), o.text.size())) << i << ": '" << o.text << "'";
            n_complete++;
        } else {  // ran out of tokens: what it wrote must still be a prefix of a sentence
            tm_grammar_matcher *m = nullptr;
            ASSERT_EQ(tm_grammar_matcher_create(person, &m), 0);
            EXPECT_EQ(tm_grammar_matcher_accept_bytes(m, o.text.data(), o.text.size()), 0) << i << ": '" << o.text << "'";
            tm_grammar_matcher_destroy(m);
        }
    }
    EXPECT_GE(n_complete, 3) << "the grammar bounds every field; most requests should complete";
}

TEST_F(EngineStructured, CheckedArgmaxGivesTheMaskedHostPathsTokens) {
    std::vector<int32_t> p1 = prompt("A person as JSON: "), p2 = prompt("{\"name\": ");
    tm_logit_processor a1, a2, h1, h2, none;
    // Fast path (argmax, then the grammar's check) against the masked host path.
    std::vector<Out> fast = run({request(p1, 0, 0, 1, 1, &a1), request(p2, 0, 0, 1, 1, &a2)});
    std::vector<Out> slow = run({request(p1, 0, 0, 1, 0, &h1), request(p2, 0, 0, 1, 0, &h2)});
    ASSERT_EQ(fast.size(), 2u);
    ASSERT_EQ(slow.size(), 2u);
    EXPECT_EQ(fast[0].tokens, slow[0].tokens);
    EXPECT_EQ(fast[1].tokens, slow[1].tokens);
    EXPECT_FALSE(fast[0].tokens.empty());
    // Batched with unconstrained and sampled requests, the constrained greedy tokens stay.
    tm_logit_processor b1, b2;
    std::vector<Out> mixed = run({request(p2, 0.9f, 7, 0, 0, &none), request(p1, 0, 0, 1, 1, &b1),
                                  request(p1, 0.0f, 0, 0, 0, &none), request(p2, 0, 0, 1, 1, &b2)});
    ASSERT_EQ(mixed.size(), 4u);
    EXPECT_EQ(mixed[1].tokens, fast[0].tokens);
    EXPECT_EQ(mixed[3].tokens, fast[1].tokens);
}

}  // namespace
