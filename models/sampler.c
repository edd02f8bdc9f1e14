/* sampler.c - logit processors, penalties, temperature, top-k / top-p / min-p and seeded
 * sampling.
 *
 * Order, as vLLM applies them: logit processors (logit_bias, ...) -> penalties -> greedy?
 * -> temperature -> top-k -> softmax -> top-p -> min-p -> draw. */
#include "models/sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* Candidates whose scaled logit is this far below the best have probability < e^-40
 * relative to it (total mass < 1e-13 over any vocabulary); dropping them before the sort
 * changes no float result and keeps sampling O(vocab) instead of O(vocab log vocab). */
#define TM_SAMPLER_LOGIT_CUT 40.0f

void tm_sampling_params_default(tm_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

void tm_sampler_init(tm_sampler *s, const tm_sampling_params *p) {
    memset(s, 0, sizeof *s);
    s->params = *p;
    tm_rng_seed(&s->rng, p->seed);
}

void tm_sampler_deinit(tm_sampler *s) {
    for (int i = 0; i < s->n_procs; i++)
        if (s->procs[i].destroy) s->procs[i].destroy(s->procs[i].ctx);
    s->n_procs = 0;
}

int tm_sampler_add_processor(tm_sampler *s, const tm_logit_processor *p) {
    if (s->n_procs >= TM_SAMPLER_MAX_PROCESSORS) return TM_ERANGE;
    s->procs[s->n_procs++] = *p;
    return TM_OK;
}

/* ---- logit_bias ---- */

typedef struct logit_bias {
    int n;         /* entries */
    int32_t *ids;  /* (n) token ids */
    float *bias;   /* (n) added to their logits */
} logit_bias;

static int logit_bias_apply(void *ctx, float *logits, int n_vocab, const int32_t *output,
                            int n_output) {
    const logit_bias *b = ctx;
    (void)output, (void)n_output;
    for (int i = 0; i < b->n; i++)
        if (b->ids[i] >= 0 && b->ids[i] < n_vocab) logits[b->ids[i]] += b->bias[i];
    return TM_OK;
}

static void logit_bias_destroy(void *ctx) {
    logit_bias *b = ctx;
    if (!b) return;
    free(b->ids);
    free(b->bias);
    free(b);
}

int tm_logit_bias_create(const int32_t *ids, const float *bias, int n, tm_logit_processor *out) {
    memset(out, 0, sizeof *out); /* a bias changes values: no allows */
    logit_bias *b = calloc(1, sizeof *b);
    if (!b) return TM_ENOMEM;
    b->n = n;
    b->ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *b->ids);
    b->bias = malloc((size_t)(n > 0 ? n : 1) * sizeof *b->bias);
    if (!b->ids || !b->bias) {
        logit_bias_destroy(b);
        return TM_ENOMEM;
    }
    if (n > 0) {
        memcpy(b->ids, ids, (size_t)n * sizeof *ids);
        memcpy(b->bias, bias, (size_t)n * sizeof *bias);
    }
    out->apply = logit_bias_apply;
    out->destroy = logit_bias_destroy;
    out->ctx = b;
    return TM_OK;
}

size_t tm_sampler_scratch_bytes(int n_vocab) {
    return (size_t)n_vocab * (sizeof(float) + 2 * sizeof(int32_t));
}

static int repetition_on(const tm_sampling_params *p) {
    return p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f;
}
static int presence_frequency_on(const tm_sampling_params *p) {
    return p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
}
/* As vLLM does, a temperature this small is greedy: 1/temperature overflows a float near
 * its smallest values, and inf logits give NaN probabilities. */
static int greedy(const tm_sampling_params *p) { return p->temperature < 1e-5f || p->top_k == 1; }

int tm_sampler_is_argmax(const tm_sampler *s) {
    const tm_sampling_params *p = &s->params;
    return greedy(p) && !repetition_on(p) && !presence_frequency_on(p) && s->n_procs == 0;
}

int tm_sampler_is_checked_argmax(const tm_sampler *s) {
    const tm_sampling_params *p = &s->params;
    if (!greedy(p) || repetition_on(p) || presence_frequency_on(p)) return 0;
    for (int i = 0; i < s->n_procs; i++)
        if (!s->procs[i].allows) return 0;
    return 1;
}

int tm_sampler_allows(tm_sampler *s, int32_t token, const int32_t *output, int n_output) {
    for (int i = 0; i < s->n_procs; i++)
        if (!s->procs[i].allows || s->procs[i].allows(s->procs[i].ctx, token, output, n_output) != 1)
            return 0;
    return 1;
}

static void apply_penalties(const tm_sampling_params *p, float *logits, int n_vocab,
                            const int32_t *prompt, int n_prompt, const int32_t *output,
                            int n_output, int32_t *counts) {
    int rep = repetition_on(p);
    int pf = presence_frequency_on(p);
    if (!rep && !pf) return;
    /* counts[id]: bit 30 marks "seen anywhere", low bits count output occurrences.
     * Only the entries of tokens in the history are touched, so no O(vocab) clear. */
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= 0 && prompt[i] < n_vocab) counts[prompt[i]] = 0;
    for (int i = 0; i < n_output; i++)
        if (output[i] >= 0 && output[i] < n_vocab) counts[output[i]] = 0;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= 0 && prompt[i] < n_vocab) counts[prompt[i]] |= 1 << 30;
    for (int i = 0; i < n_output; i++)
        if (output[i] >= 0 && output[i] < n_vocab) counts[output[i]] = (counts[output[i]] + 1) | (1 << 30);
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *ids = pass ? output : prompt;
        int n = pass ? n_output : n_prompt;
        for (int i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= n_vocab || counts[id] == 0) continue; /* done already */
            int c = counts[id] & ((1 << 30) - 1);
            if (rep) {
                float r = p->repetition_penalty;
                logits[id] = logits[id] > 0 ? logits[id] / r : logits[id] * r;
            }
            if (pf && c > 0) logits[id] -= p->frequency_penalty * (float)c + p->presence_penalty;
            counts[id] = 0; /* each token is penalized once */
        }
    }
}

static void heap_build(float *val, int32_t *id, int n);
static void heap_pop(float *val, int32_t *id, int *h);

int32_t tm_sampler_sample(tm_sampler *s, float *logits, int n_vocab, const int32_t *prompt,
                          int n_prompt, const int32_t *output, int n_output, void *scratch) {
    const tm_sampling_params *p = &s->params;
    float *val = (float *)scratch;                 /* (n_vocab) candidate values */
    int32_t *counts = (int32_t *)(val + n_vocab);  /* (n_vocab) penalty counts */
    int32_t *id = counts + n_vocab;                /* (n_vocab) candidate ids */

    for (int i = 0; i < s->n_procs; i++) {
        int rc = s->procs[i].apply(s->procs[i].ctx, logits, n_vocab, output, n_output);
        if (rc != TM_OK) return rc < 0 ? rc : TM_EINVAL;
    }
    apply_penalties(p, logits, n_vocab, prompt, n_prompt, output, n_output, counts);
    if (greedy(p)) {
        int32_t t = tm_argmax(logits, n_vocab);
        /* a processor may forbid tokens with -inf; never pick a forbidden one */
        return s->n_procs > 0 && !(logits[t] > -INFINITY) ? TM_EINVAL : t;
    }

    /* Temperature, then keep the candidates within the cut of the best. */
    float inv_t = 1.0f / p->temperature;
    float best = -INFINITY;
    for (int i = 0; i < n_vocab; i++)
        if (logits[i] > best) best = logits[i];
    if (!(best > -INFINITY)) return TM_EINVAL; /* every token forbidden (or NaN) */
    best *= inv_t;
    /* The candidates within the cut of the best, each as exp(v - best): probabilities up to
     * their sum, which the filters below never need divided out (top_p compares with a
     * fraction of the sum, min_p with a fraction of the best, 1). One pass. */
    int n = 0;
    double mass = 0.0;
    for (int i = 0; i < n_vocab; i++) {
        float v = logits[i] * inv_t - best;
        if (v >= -TM_SAMPLER_LOGIT_CUT) {
            float e = expf(v);
            val[n] = e;
            id[n] = i;
            mass += e;
            n++;
        }
    }
    /* The survivors are val/id[lo, n). Only top_k and top_p need them in order, and then
     * only their best few: a heap hands those out one at a time, best first, to the end of
     * the arrays (O(n + k log n)), instead of sorting the whole vocabulary for every row. */
    int lo = 0, h = n, sorted = 0;
    if (p->top_k > 0 && p->top_k < n) {
        heap_build(val, id, n);
        while (n - h < p->top_k) heap_pop(val, id, &h);
        lo = h, sorted = 1;
        mass = 0.0;
        for (int i = n - 1; i >= lo; i--) mass += val[i];
    }
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        /* the smallest best-first run whose mass reaches top_p */
        const double want = p->top_p * mass;
        double cum = 0.0;
        if (sorted) {
            int i = n - 1;
            while (i > lo && (cum += val[i]) < want) i--;
            lo = i;
        } else {
            heap_build(val + lo, id + lo, n - lo);
            h = n - lo;
            while (h > 0 && cum < want) {
                heap_pop(val + lo, id + lo, &h);
                cum += val[lo + h];
            }
            lo += h;
        }
    }
    if (p->min_p > 0.0f) {
        /* keep those within min_p of the best (exp(0) = 1), in their order */
        int w = n;
        for (int i = n - 1; i >= lo; i--)
            if (val[i] >= p->min_p) val[--w] = val[i], id[w] = id[i];
        lo = w;
    }

    double total = 0.0;
    if (lo == 0) {
        total = mass;
    } else {
        for (int i = lo; i < n; i++) total += val[i];
    }
    double u = tm_rng_uniform(&s->rng) * total;
    double cum = 0.0;
    for (int i = n - 1; i >= lo; i--) { /* best first where sorted */
        cum += val[i];
        if (u < cum) return id[i];
    }
    return id[lo];
}

/* A heap of (val, id) pairs whose root sorts first: val descending, ties by id ascending
 * (deterministic). No allocation. */
static int before(const float *val, const int32_t *id, int a, int b) {
    return val[a] > val[b] || (val[a] == val[b] && id[a] < id[b]);
}

static void swap2(float *val, int32_t *id, int a, int b) {
    float tv = val[a];
    val[a] = val[b];
    val[b] = tv;
    int32_t ti = id[a];
    id[a] = id[b];
    id[b] = ti;
}

static void sift_down(float *val, int32_t *id, int root, int n) {
    for (;;) {
        int c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && before(val, id, c + 1, c)) c++;
        if (!before(val, id, c, root)) return;
        swap2(val, id, root, c);
        root = c;
    }
}

static void heap_build(float *val, int32_t *id, int n) {
    for (int i = n / 2 - 1; i >= 0; i--) sift_down(val, id, i, n);
}

/* Moves the root (the best of the heap's *h entries) to position *h - 1 and shrinks it. */
static void heap_pop(float *val, int32_t *id, int *h) {
    swap2(val, id, 0, --*h);
    sift_down(val, id, 0, *h);
}

static float log_sum_exp(const float *logits, int n_vocab, float *max_out) {
    float mx = -FLT_MAX;
    for (int i = 0; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - mx));
    *max_out = mx;
    return (float)log(sum);
}

float tm_logprob_of(const float *logits, int n_vocab, int32_t token) {
    if (token < 0 || token >= n_vocab) return -INFINITY;
    float mx;
    float lse = log_sum_exp(logits, n_vocab, &mx);
    return logits[token] - mx - lse;
}

void tm_logprobs_top(const float *logits, int n_vocab, int n_top, int32_t *ids, float *lps) {
    if (n_top <= 0) return;
    if (n_top > n_vocab) n_top = n_vocab;
    float mx;
    float lse = log_sum_exp(logits, n_vocab, &mx);
    /* insertion into a small sorted list: n_top <= 20 */
    int n = 0;
    for (int i = 0; i < n_vocab; i++) {
        float v = logits[i];
        if (n == n_top && v <= lps[n - 1]) continue;
        int j = n < n_top ? n++ : n - 1;
        while (j > 0 && lps[j - 1] < v) {
            lps[j] = lps[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        lps[j] = v;
        ids[j] = i;
    }
    for (int i = 0; i < n; i++) lps[i] = lps[i] - mx - lse;
}
