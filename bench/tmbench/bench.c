/* bench.c - `tokenmill bench`: options (named as `vllm bench serve` names them), the
 * pre-run checks, warm-up, the run or a rate sweep, and the reports. */
#include "bench/tmbench/bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bench/tmbench/client.h"
#include "bench/tmbench/cost.h"
#include "bench/tmbench/loadgen.h"
#include "bench/tmbench/metrics.h"
#include "bench/tmbench/report.h"
#include "bench/tmbench/workloads.h"
#include "common/common.h"
#include "server/cli_args.h"

#ifndef TM_BENCH_PRICES_DEFAULT
#define TM_BENCH_PRICES_DEFAULT "bench/api-prices-2026-06.tsv"
#endif
#define MAX_META 32
#define MAX_SWEEP 32

typedef struct opts {
    const char *base_url, *host, *endpoint, *backend;  /* where and how */
    long port;
    const char *model, *served_model_name, *api_key;
    const char *dataset, *dataset_path;
    long num_prompts;
    long input_len, output_len, random_prefix_len;      /* random (and chat) */
    float range_ratio;
    long pr_prefix_len, pr_suffix_len, pr_num_prefixes, pr_output_len; /* prefix */
    long chat_turns, custom_output_len;
    int disable_shuffle, ignore_eos, disable_tqdm, save_result, save_detailed;
    long max_concurrency, num_warmups, seed;
    float request_rate, burstiness;
    float temperature, top_p, min_p;                    /* NAN: not sent */
    long top_k;                                         /* -1: not sent */
    const char *extra_body;
    const char *percentile_metrics, *metric_percentiles;
    tm_bench_slo slo;
    const char *result_dir, *result_filename, *label;
    const char *metadata[MAX_META];
    int n_metadata;
    float timeout_s;
    float gpu_hourly, cpu_hourly;                       /* cpu < 0: no CPU report */
    long gpus;
    const char *prices_path;
    const char *sweep_rates;
    float sweep_good_fraction;
    const char *from_result;
} opts;

static void usage(FILE *f) {
    fprintf(f,
        "usage: tokenmill bench [options]       (flags as in `vllm bench serve`)\n"
        "server\n"
        "  --base-url URL                 http://HOST:PORT (or --host 127.0.0.1 --port 8000)\n"
        "  --backend openai|openai-chat   completions or chat completions (openai)\n"
        "  --endpoint PATH                /v1/completions or /v1/chat/completions\n"
        "  --model NAME                   model id (the first of /v1/models)\n"
        "  --served-model-name NAME       the name sent in requests (--model)\n"
        "  --api-key KEY                  bearer key (or OPENAI_API_KEY)\n"
        "workload\n"
        "  --dataset-name random|prefix|chat|file   (random; prefix_repetition, custom too)\n"
        "  --num-prompts N                requests in all (1000)\n"
        "  --random-input-len N / --random-output-len N / --random-range-ratio R (1024/128/0)\n"
        "  --random-prefix-len N          ids shared by every random prompt (0)\n"
        "  --input-len N / --output-len N set the lengths of any dataset\n"
        "  --prefix-repetition-prefix-len N / -suffix-len N / -num-prefixes N / -output-len N\n"
        "                                 (256 / 256 / 10 / 128)\n"
        "  --chat-num-turns N             turns per conversation for chat (4)\n"
        "  --dataset-path FILE            JSONL for file: {\"prompt\": ..., \"output_tokens\": N}\n"
        "  --custom-output-len N          output tokens when a line names none (256)\n"
        "  --disable-shuffle              keep the prefix / file order\n"
        "  --ignore-eos                   (always on for random, prefix and chat)\n"
        "  --temperature T --top-p P --top-k K --min-p P   sampling (server defaults)\n"
        "  --extra-body JSON              fields merged into every request\n"
        "load\n"
        "  --max-concurrency N            requests in flight at most (no limit)\n"
        "  --request-rate R               arrivals per second, Poisson (inf: all at once)\n"
        "  --burstiness B                 gamma shape of the gaps (1 = Poisson)\n"
        "  --seed S                       prompts and arrivals (0)\n"
        "  --num-warmups N                requests before the run, not measured (0)\n"
        "  --request-timeout S            per request (600)\n"
        "  --goodput KEY:MS ...           SLOs for goodput: ttft, tpot, e2el\n"
        "  --sweep-request-rates R1,R2,.. one run per rate (ascending; needs --goodput): the\n"
        "                                 highest rate at which the SLOs hold\n"
        "  --sweep-good-fraction F        share of requests that must meet them (0.9)\n"
        "output\n"
        "  --percentile-metrics LIST      of ttft,tpot,itl,e2el (all four)\n"
        "  --metric-percentiles LIST      e.g. 50,90,99 (90,99)\n"
        "  --save-result / --result-dir DIR / --result-filename FILE   write the JSON\n"
        "  --save-detailed                add per-request arrays\n"
        "  --label NAME / --metadata KEY=VALUE ...\n"
        "  --disable-tqdm                 no progress bar (drawn only on a terminal anyway)\n"
        "cost\n"
        "  --gpu-hourly-usd X (3.50) --gpus N (1)   price of the host serving the load\n"
        "  --cpu-hourly-usd X             also price a CPU host at the same load\n"
        "  --api-prices FILE              managed-API prices (%s)\n"
        "  --from-result FILE             print the cost report of a saved result; no run\n",
        TM_BENCH_PRICES_DEFAULT);
}

static int bad(const char *msg, const char *what) {
    fprintf(stderr, "tokenmill bench: %s%s%s\n", msg, what ? " " : "", what ? what : "");
    return 2;
}

/* --goodput ttft:300 tpot:50 */
static int parse_slo(const char *s, tm_bench_slo *slo) {
    const char *colon = strchr(s, ':');
    if (!colon) return -1;
    char *end;
    errno = 0;
    double v = strtod(colon + 1, &end);
    if (errno || *end || end == colon + 1 || !(v >= 0)) return -1;
    size_t n = (size_t)(colon - s);
    if (n == 4 && !strncmp(s, "ttft", 4)) slo->ttft_ms = v;
    else if (n == 4 && !strncmp(s, "tpot", 4)) slo->tpot_ms = v;
    else if (n == 4 && !strncmp(s, "e2el", 4)) slo->e2el_ms = v;
    else return -1;
    return 0;
}

static int parse_opts(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->dataset = "random";
    o->num_prompts = 1000;
    o->input_len = 1024;
    o->output_len = 128;
    o->pr_prefix_len = o->pr_suffix_len = 256;
    o->pr_num_prefixes = 10;
    o->pr_output_len = 128;
    o->chat_turns = 4;
    o->custom_output_len = 256;
    o->request_rate = INFINITY;
    o->burstiness = 1.0f;
    o->temperature = o->top_p = o->min_p = NAN;
    o->top_k = -1;
    o->percentile_metrics = "ttft,tpot,itl,e2el";
    o->metric_percentiles = "90,99";
    o->slo = (tm_bench_slo){-1, -1, -1};
    o->timeout_s = 600;
    o->gpu_hourly = 3.50f;
    o->cpu_hourly = -1;
    o->gpus = 1;
    o->sweep_good_fraction = 0.9f;
    long in_len = -1, out_len = -1;
    for (int i = 1; i < argc; i++) {
        char flag[128];
        const char *a = argv[i], *v = NULL;
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof flag) { /* --flag=value */
            memcpy(flag, a, (size_t)(eq - a));
            flag[eq - a] = 0;
            a = flag;
            v = eq + 1;
        }
        int inline_v = v != NULL;
        if (!v && i + 1 < argc) v = argv[i + 1];
#define IS(name) (!strcmp(a, name))
#define TAKE() do { if (!v) return bad("missing value after", a); if (!inline_v) i++; } while (0)
#define STR(name, field) if (IS(name)) { TAKE(); o->field = v; continue; }
#define LONG(name, field, lo, hi) if (IS(name)) { TAKE(); if (tm_cli_long("bench", a, v, lo, hi, &o->field)) return 2; continue; }
#define FLT(name, field, lo, hi) if (IS(name)) { TAKE(); if (tm_cli_float("bench", a, v, lo, hi, &o->field)) return 2; continue; }
#define FLAG(name, field) if (IS(name)) { o->field = 1; continue; }
        if (IS("-h") || IS("--help")) {
            usage(stdout);
            return 1;
        }
        STR("--base-url", base_url) STR("--host", host) STR("--endpoint", endpoint) STR("--backend", backend)
        STR("--model", model) STR("--served-model-name", served_model_name) STR("--api-key", api_key)
        STR("--dataset-name", dataset) STR("--dataset-path", dataset_path) STR("--extra-body", extra_body)
        STR("--percentile-metrics", percentile_metrics) STR("--metric-percentiles", metric_percentiles)
        STR("--result-dir", result_dir) STR("--result-filename", result_filename) STR("--label", label)
        STR("--api-prices", prices_path) STR("--sweep-request-rates", sweep_rates) STR("--from-result", from_result)
        LONG("--port", port, 1, 65535)
        LONG("--num-prompts", num_prompts, 1, 10000000)
        LONG("--random-input-len", input_len, 1, 1 << 24) LONG("--random-output-len", output_len, 1, 1 << 24)
        LONG("--random-prefix-len", random_prefix_len, 0, 1 << 24)
        LONG("--prefix-repetition-prefix-len", pr_prefix_len, 0, 1 << 24)
        LONG("--prefix-repetition-suffix-len", pr_suffix_len, 1, 1 << 24)
        LONG("--prefix-repetition-num-prefixes", pr_num_prefixes, 1, 1 << 20)
        LONG("--prefix-repetition-output-len", pr_output_len, 1, 1 << 24)
        LONG("--chat-num-turns", chat_turns, 1, 1000) LONG("--custom-output-len", custom_output_len, 1, 1 << 24)
        LONG("--max-concurrency", max_concurrency, 1, 1 << 20) LONG("--num-warmups", num_warmups, 0, 1 << 20)
        LONG("--seed", seed, 0, 0x7fffffffL) LONG("--top-k", top_k, 0, 1 << 24) LONG("--gpus", gpus, 1, 4096)
        FLT("--random-range-ratio", range_ratio, 0.0f, 0.999f)
        FLT("--request-rate", request_rate, 1e-6f, INFINITY) FLT("--burstiness", burstiness, 1e-3f, INFINITY)
        FLT("--temperature", temperature, 0.0f, 100.0f) FLT("--top-p", top_p, 0.0f, 1.0f)
        FLT("--min-p", min_p, 0.0f, 1.0f) FLT("--request-timeout", timeout_s, 0.01f, 86400.0f)
        FLT("--gpu-hourly-usd", gpu_hourly, 0.0f, 1e6f) FLT("--cpu-hourly-usd", cpu_hourly, 0.0f, 1e6f)
        FLT("--sweep-good-fraction", sweep_good_fraction, 0.0f, 1.0f)
        FLAG("--disable-shuffle", disable_shuffle) FLAG("--ignore-eos", ignore_eos)
        FLAG("--disable-tqdm", disable_tqdm) FLAG("--save-result", save_result)
        FLAG("--save-detailed", save_detailed)
        if (IS("--input-len")) { TAKE(); if (tm_cli_long("bench", a, v, 1, 1 << 24, &in_len)) return 2; continue; }
        if (IS("--output-len")) { TAKE(); if (tm_cli_long("bench", a, v, 1, 1 << 24, &out_len)) return 2; continue; }
        if (IS("--goodput") || IS("--metadata")) { /* one or more values, up to the next flag */
            int goodput = IS("--goodput"), n = 0;
            for (;;) {
                const char *x;
                if (inline_v) x = n ? NULL : v; /* --goodput=ttft:100 holds one value */
                else x = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i] : NULL;
                if (!x) break;
                n++;
                if (goodput && parse_slo(x, &o->slo))
                    return bad("--goodput takes KEY:MILLISECONDS with KEY ttft, tpot or e2el, not", x);
                if (!goodput) {
                    if (!strchr(x, '=') || o->n_metadata == MAX_META) return bad("--metadata takes KEY=VALUE, not", x);
                    o->metadata[o->n_metadata++] = x;
                }
            }
            if (n == 0) return bad("missing value after", a);
            continue;
        }
        if (a[0] == '-') return bad("unknown option", a);
        return bad("unexpected argument", a);
    }
    if (in_len > 0) o->input_len = in_len;
    if (out_len > 0) o->output_len = o->pr_output_len = o->custom_output_len = out_len;
    return 0;
}

/* ---- helpers ---- */

static int parse_list(const char *s, double *out, int max, double lo, double hi) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !(v >= lo && v <= hi) || n == max) return -1;
        out[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return n;
}

static unsigned parse_metrics(const char *s) {
    unsigned m = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "ttft")) m |= TM_BENCH_M_TTFT;
        else if (!strcmp(t, "tpot")) m |= TM_BENCH_M_TPOT;
        else if (!strcmp(t, "itl")) m |= TM_BENCH_M_ITL;
        else if (!strcmp(t, "e2el")) m |= TM_BENCH_M_E2EL;
        else return 0;
    }
    return m;
}

/* Sampling flags and --extra-body as one JSON object text (caller frees), or NULL. */
static char *extra_json(const opts *o, int *bad_json) {
    json_t *x = json_object();
    *bad_json = 0;
    if (o->extra_body) {
        json_t *e = json_loads(o->extra_body, 0, NULL);
        if (!json_is_object(e)) {
            json_decref(e);
            json_decref(x);
            *bad_json = 1;
            return NULL;
        }
        json_object_update(x, e);
        json_decref(e);
    }
    if (!isnan(o->temperature)) json_object_set_new(x, "temperature", json_real(o->temperature));
    if (!isnan(o->top_p)) json_object_set_new(x, "top_p", json_real(o->top_p));
    if (!isnan(o->min_p)) json_object_set_new(x, "min_p", json_real(o->min_p));
    if (o->top_k >= 0) json_object_set_new(x, "top_k", json_integer(o->top_k));
    char *s = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    return s;
}

/* GET /v1/models: reachable, authorized, and the first model's id (into model). */
static int preflight(const tm_bench_target *t, char *model, size_t model_len) {
    char err[512], *resp = NULL;
    size_t len = 0;
    int status = 0;
    if (tm_bench_http_call(t, "GET", "/v1/models", NULL, 0, 30.0, &status, &resp, &len, err, sizeof err)) {
        fprintf(stderr, "tokenmill bench: the server at %s cannot be used: %s\n", t->base_url, err);
        return -1;
    }
    char msg[300];
    tm_bench_error_text(resp, len, msg, sizeof msg);
    if (status == 401 || status == 403) {
        fprintf(stderr, "tokenmill bench: %s refused the API key (HTTP %d: %s); pass --api-key or set "
                "OPENAI_API_KEY\n", t->base_url, status, msg);
        free(resp);
        return -1;
    }
    json_t *j = status == 200 ? json_loadb(resp, len, 0, NULL) : NULL;
    json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
    if (json_is_string(id) && !model[0]) snprintf(model, model_len, "%s", json_string_value(id));
    json_decref(j);
    free(resp);
    if (!model[0]) {
        fprintf(stderr, "tokenmill bench: GET /v1/models on %s gave no model (HTTP %d: %s); pass --model\n",
                t->base_url, status, msg);
        return -1;
    }
    return 0;
}

static tm_bench_dataset dataset_of(const char *s, int *ok) {
    *ok = 1;
    if (!strcmp(s, "random")) return TM_BENCH_RANDOM;
    if (!strcmp(s, "prefix") || !strcmp(s, "prefix_repetition")) return TM_BENCH_PREFIX;
    if (!strcmp(s, "chat")) return TM_BENCH_CHAT;
    if (!strcmp(s, "file") || !strcmp(s, "custom")) return TM_BENCH_FILE;
    *ok = 0;
    return TM_BENCH_RANDOM;
}

static const char *dataset_name(tm_bench_dataset d) {
    static const char *names[] = {"random", "prefix", "chat", "file"};
    return names[d];
}

/* Everything one run needs beyond the options. */
typedef struct run_ctx {
    const opts *o;
    tm_bench_target target;
    tm_bench_workload_opts wo;     /* the workload (seed varies per sweep step) */
    tm_bench_load load;            /* the load (rate varies per sweep step) */
    double pcts[TM_BENCH_MAX_PCTS];
    int n_pcts;
    tm_bench_run_info info;
} run_ctx;

static void print_errors(const tm_bench_record *recs, int n) {
    int shown = 0;
    for (int i = 0; i < n && shown < 5; i++) {
        if (recs[i].ok || !recs[i].error) continue;
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) seen = recs[k].error && !strcmp(recs[k].error, recs[i].error);
        if (seen) continue;
        fprintf(stderr, "tokenmill bench: request %d failed: %s\n", i, recs[i].error);
        shown++;
    }
}

/* Builds the workload, runs it and summarizes; fills *result (json_t*). 0, or 1 when the
 * run could not happen (message printed). */
static int run_once(run_ctx *x, const tm_bench_workload_opts *wo, double rate, tm_bench_summary *s,
                    json_t **result) {
    char err[512];
    tm_bench_workload w;
    *result = NULL;
    if (tm_bench_workload_build(wo, &x->target, &w, err, sizeof err)) {
        fprintf(stderr, "tokenmill bench: %s\n", err);
        return 1;
    }
    tm_bench_load load = x->load;
    load.request_rate = rate;
    if (wo->dataset == TM_BENCH_CHAT) {
        load.keep_text = 1;
        load.followup = tm_bench_workload_followup;
        load.followup_user = &w;
    }
    tm_bench_record *recs = calloc((size_t)w.n_total, sizeof *recs);
    int n_done = 0, rc = 1;
    double dur = 0;
    if (!recs) {
        fprintf(stderr, "tokenmill bench: out of memory\n");
        goto done;
    }
    if (tm_bench_load_run(&load, w.specs, w.n_initial, w.n_total, recs, &n_done, &dur, err, sizeof err)) {
        fprintf(stderr, "tokenmill bench: %s\n", err);
        goto done;
    }
    print_errors(recs, n_done);
    if (tm_bench_summarize(recs, n_done, fmax(dur, 1e-9), x->pcts, x->n_pcts, &x->o->slo, s)) {
        fprintf(stderr, "tokenmill bench: out of memory\n");
        goto done;
    }
    x->info.request_rate = rate;
    x->info.seed = wo->seed;
    *result = tm_bench_report_json(&x->info, s);
    if (*result && x->o->save_detailed) tm_bench_report_add_detail(*result, recs, n_done);
    rc = *result ? 0 : 1;
done:
    for (int i = 0; recs && i < w.n_total; i++) tm_bench_record_clear(&recs[i]);
    free(recs);
    tm_bench_workload_free(&w, n_done > w.n_initial ? n_done : w.n_initial);
    return rc;
}

static void cost_reports(const opts *o, json_t *result, double in_tps, double out_tps, FILE *f) {
    tm_bench_prices prices, *pp = NULL;
    char err[512];
    const char *path = o->prices_path ? o->prices_path : getenv("TM_API_PRICES");
    if (!path) path = TM_BENCH_PRICES_DEFAULT;
    if (tm_bench_prices_load(path, &prices, err, sizeof err) == 0) pp = &prices;
    else fprintf(stderr, "tokenmill bench: no managed-API comparison: %s\n", err);
    char label[128];
    tm_bench_cost c;
    fprintf(f, "%-50s\n", "------------- Cost at this load -------------");
    snprintf(label, sizeof label, "%ld GPU%s x $%.2f/h", o->gpus, o->gpus > 1 ? "s" : "", o->gpu_hourly);
    tm_bench_cost_compute(o->gpu_hourly * (double)o->gpus, in_tps, out_tps, &c);
    tm_bench_cost_print(f, label, &c, pp);
    if (result) {
        tm_bench_report_add_cost(result, "gpu", label, &c, pp);
        json_t *g = json_object_get(json_object_get(result, "cost"), "gpu");
        json_object_set_new(g, "gpu_hourly_usd", json_real(o->gpu_hourly));
        json_object_set_new(g, "gpus", json_integer(o->gpus));
    }
    if (o->cpu_hourly >= 0) {
        snprintf(label, sizeof label, "CPU host x $%.2f/h", o->cpu_hourly);
        tm_bench_cost_compute(o->cpu_hourly, in_tps, out_tps, &c);
        fprintf(f, "\n");
        tm_bench_cost_print(f, label, &c, pp);
        if (result) tm_bench_report_add_cost(result, "cpu", label, &c, pp);
    }
    if (pp) tm_bench_prices_free(pp);
}

static int from_result(const opts *o) {
    json_error_t je;
    json_t *r = json_load_file(o->from_result, 0, &je);
    if (!r) {
        fprintf(stderr, "tokenmill bench: cannot read the result %s: %s\n", o->from_result, je.text);
        return 1;
    }
    json_t *sw = json_object_get(r, "sweep"); /* a sweep: the fastest step that met the SLOs */
    json_t *run = r;
    if (json_is_array(sw) && json_array_size(sw)) {
        double need = json_number_value(json_object_get(r, "sweep_good_fraction"));
        run = json_array_get(sw, 0);
        for (size_t i = 0; i < json_array_size(sw); i++)
            if (json_number_value(json_object_get(json_array_get(sw, i), "good_fraction")) >= need)
                run = json_array_get(sw, i);
    }
    double dur = json_number_value(json_object_get(run, "duration"));
    double in = json_number_value(json_object_get(run, "total_input_tokens"));
    double out_tps = json_number_value(json_object_get(run, "output_throughput"));
    if (!(dur > 0) || !json_is_number(json_object_get(run, "output_throughput"))) {
        fprintf(stderr, "tokenmill bench: %s lacks duration / output_throughput / total_input_tokens\n",
                o->from_result);
        json_decref(r);
        return 1;
    }
    printf("%-40s %s\n", "Result:", o->from_result);
    printf("%-40s %.2f\n%-40s %.2f\n", "Input token throughput (tok/s):", in / dur,
           "Output token throughput (tok/s):", out_tps);
    cost_reports(o, NULL, in / dur, out_tps, stdout);
    json_decref(r);
    return 0;
}

static int write_result(const opts *o, json_t *result, const char *model) {
    char path[1024];
    if (o->result_filename) {
        snprintf(path, sizeof path, "%s", o->result_filename);
    } else {
        const char *base = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
        char rate[32] = "inf", conc[32] = "";
        if (!isinf(o->request_rate)) snprintf(rate, sizeof rate, "%g", o->request_rate);
        if (o->max_concurrency > 0) snprintf(conc, sizeof conc, "-concurrency%ld", o->max_concurrency);
        snprintf(path, sizeof path, "%s-%sqps%s-%s-%s.json", o->label ? o->label : "tokenmill", rate, conc, base,
                 json_string_value(json_object_get(result, "date")));
    }
    char full[1400];
    if (o->result_dir) {
        mkdir(o->result_dir, 0777);
        snprintf(full, sizeof full, "%s/%s", o->result_dir, path);
    } else {
        snprintf(full, sizeof full, "%s", path);
    }
    if (json_dump_file(result, full, JSON_INDENT(1) | JSON_REAL_PRECISION(10))) {
        fprintf(stderr, "tokenmill bench: cannot write %s: %s\n", full, strerror(errno));
        return 1;
    }
    fprintf(stderr, "tokenmill bench: wrote %s\n", full);
    return 0;
}

int tm_bench_main(int argc, char **argv) {
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (o.from_result) return from_result(&o);

    run_ctx x;
    memset(&x, 0, sizeof x);
    x.o = &o;
    int ok;
    tm_bench_dataset ds = dataset_of(o.dataset, &ok);
    if (!ok) return bad("--dataset-name is random, prefix, chat or file, not", o.dataset);
    if (ds == TM_BENCH_FILE && !o.dataset_path) return bad("--dataset-name file needs --dataset-path FILE", NULL);
    if (ds != TM_BENCH_FILE && o.dataset_path) return bad("--dataset-path goes with --dataset-name file", NULL);
    const char *backend = o.backend ? o.backend : ds == TM_BENCH_CHAT ? "openai-chat" : "openai";
    if (!strcmp(backend, "vllm")) backend = "openai";
    int chat = !strcmp(backend, "openai-chat");
    if (!chat && strcmp(backend, "openai")) return bad("--backend is openai or openai-chat, not", backend);
    if (ds == TM_BENCH_CHAT && !chat) return bad("--dataset-name chat needs --backend openai-chat", NULL);
    const char *endpoint = o.endpoint ? o.endpoint : chat ? "/v1/chat/completions" : "/v1/completions";
    if (endpoint[0] != '/') return bad("--endpoint must start with '/':", endpoint);
    if ((x.n_pcts = parse_list(o.metric_percentiles, x.pcts, TM_BENCH_MAX_PCTS, 0, 100)) <= 0)
        return bad("--metric-percentiles takes up to 8 numbers in [0, 100] such as 90,99, not", o.metric_percentiles);
    unsigned metrics = parse_metrics(o.percentile_metrics);
    if (!metrics) return bad("--percentile-metrics takes a list of ttft, tpot, itl, e2el, not", o.percentile_metrics);
    double sweep[MAX_SWEEP];
    int n_sweep = 0;
    if (o.sweep_rates) {
        n_sweep = parse_list(o.sweep_rates, sweep, MAX_SWEEP, 1e-6, 1e9);
        if (n_sweep <= 0) return bad("--sweep-request-rates takes up to 32 positive rates such as 1,2,4, not", o.sweep_rates);
        for (int i = 1; i < n_sweep; i++)
            if (sweep[i] <= sweep[i - 1]) return bad("--sweep-request-rates must be ascending:", o.sweep_rates);
        if (o.slo.ttft_ms < 0 && o.slo.tpot_ms < 0 && o.slo.e2el_ms < 0)
            return bad("--sweep-request-rates needs --goodput SLOs to test", NULL);
    }
    int bad_json = 0;
    char *extra = extra_json(&o, &bad_json);
    if (bad_json) return bad("--extra-body must be a JSON object", NULL);

    char url[600], err[512];
    if (o.base_url) snprintf(url, sizeof url, "%s", o.base_url);
    else snprintf(url, sizeof url, "http://%s:%ld", o.host, o.port);
    const char *key = o.api_key ? o.api_key : getenv("OPENAI_API_KEY");
    if (tm_bench_target_init(&x.target, url, key, err, sizeof err)) {
        free(extra);
        fprintf(stderr, "tokenmill bench: %s\n", err);
        return 2;
    }
    char model[256] = "";
    if (o.model) snprintf(model, sizeof model, "%s", o.model);
    if (preflight(&x.target, model, sizeof model)) {
        free(extra);
        return 1;
    }
    const char *sent_name = o.served_model_name ? o.served_model_name : model;

    x.wo = (tm_bench_workload_opts){
        .dataset = ds, .chat_api = chat, .model = sent_name, .num_prompts = (int)o.num_prompts,
        .input_len = (int)o.input_len, .output_len = (int)o.output_len, .range_ratio = o.range_ratio,
        .random_prefix_len = (int)o.random_prefix_len, .prefix_len = (int)o.pr_prefix_len,
        .suffix_len = (int)o.pr_suffix_len, .num_prefixes = (int)o.pr_num_prefixes,
        .prefix_output_len = (int)o.pr_output_len, .chat_turns = (int)o.chat_turns, .path = o.dataset_path,
        .custom_output_len = (int)o.custom_output_len, .shuffle = !o.disable_shuffle,
        .ignore_eos = o.ignore_eos, .seed = (uint64_t)o.seed, .extra_json = extra, .call_timeout_s = 60};
    x.load = (tm_bench_load){
        .target = &x.target, .path = endpoint, .chat = chat, .max_concurrency = (int)o.max_concurrency,
        .burstiness = o.burstiness, .seed = (uint64_t)o.seed, .timeout_s = o.timeout_s,
        .progress = !o.disable_tqdm && isatty(2)};
    x.info = (tm_bench_run_info){
        .backend = backend, .endpoint = endpoint, .base_url = x.target.base_url, .model = model,
        .dataset = dataset_name(ds), .label = o.label, .num_prompts = (int)o.num_prompts,
        .burstiness = o.burstiness, .max_concurrency = (int)o.max_concurrency, .metrics = metrics,
        .slo = o.slo};

    if (o.num_warmups > 0) { /* other prompts than the run's, so none of them is cached for it */
        tm_bench_workload_opts wo = x.wo;
        wo.num_prompts = (int)o.num_warmups;
        wo.seed = (uint64_t)o.seed + 1000003u;
        if (wo.dataset == TM_BENCH_PREFIX) wo.num_prefixes = 1;
        tm_bench_summary s;
        json_t *r = NULL;
        fprintf(stderr, "tokenmill bench: %ld warm-up requests\n", o.num_warmups);
        if (run_once(&x, &wo, INFINITY, &s, &r)) {
            free(extra);
            return 1;
        }
        json_decref(r);
    }

    tm_bench_summary s;
    json_t *result = NULL;
    if (n_sweep == 0) {
        if (run_once(&x, &x.wo, o.request_rate, &s, &result)) {
            free(extra);
            return 1;
        }
        tm_bench_report_print(stdout, &x.info, &s);
    } else {
        json_t *runs = json_array();
        double best = -1;
        for (int i = 0; i < n_sweep; i++) {
            tm_bench_workload_opts wo = x.wo;
            wo.seed = (uint64_t)o.seed + (uint64_t)i; /* fresh prompts: none cached by an earlier step */
            json_t *r = NULL;
            fprintf(stderr, "tokenmill bench: sweep step %d/%d, %g requests/s\n", i + 1, n_sweep, sweep[i]);
            if (run_once(&x, &wo, sweep[i], &s, &r)) {
                json_decref(runs);
                free(extra);
                return 1;
            }
            double good = s.completed + s.failed ? (double)s.n_good / (s.completed + s.failed) : 0;
            json_object_set_new(r, "good_fraction", json_real(good));
            json_array_append_new(runs, r);
            printf("%-40s %-10.2f good %.3f of requests, %.2f output tok/s\n", "Sweep: request rate", sweep[i], good,
                   s.output_throughput);
            if (good < o.sweep_good_fraction) break; /* past the knee; higher rates only queue more */
            best = sweep[i];
        }
        result = json_object();
        json_object_set_new(result, "tool", json_string("tokenmill bench"));
        json_object_set_new(result, "sweep_good_fraction", json_real(o.sweep_good_fraction));
        json_object_set_new(result, "max_request_rate_meeting_slo", best >= 0 ? json_real(best) : json_null());
        json_object_set_new(result, "date", json_incref(json_object_get(json_array_get(runs, 0), "date")));
        json_object_set_new(result, "sweep", runs);
        printf("%-40s %s\n", "Highest rate meeting the SLOs (req/s):",
               best >= 0 ? (snprintf(err, sizeof err, "%g", best), err) : "none of those tried");
    }
    /* the cost at this load: the run's, or the best sweep step's */
    json_t *last = n_sweep ? json_array_get(json_object_get(result, "sweep"), 0) : result;
    if (n_sweep) {
        json_t *runs = json_object_get(result, "sweep");
        for (size_t i = 0; i < json_array_size(runs); i++)
            if (json_number_value(json_object_get(json_array_get(runs, i), "good_fraction")) >= o.sweep_good_fraction)
                last = json_array_get(runs, i);
    }
    double dur = json_number_value(json_object_get(last, "duration"));
    double in_tps = dur > 0 ? json_number_value(json_object_get(last, "total_input_tokens")) / dur : 0;
    cost_reports(&o, result, in_tps, json_number_value(json_object_get(last, "output_throughput")), stdout);
    for (int i = 0; i < o.n_metadata; i++) {
        const char *eq = strchr(o.metadata[i], '=');
        char k[128];
        snprintf(k, sizeof k, "%.*s", (int)(eq - o.metadata[i]), o.metadata[i]);
        json_object_set_new(result, k, json_string(eq + 1));
    }
    rc = 0;
    if (o.save_result || o.result_filename || o.result_dir) rc = write_result(&o, result, model);
    int completed = (int)json_integer_value(json_object_get(last, "completed"));
    json_decref(result);
    free(extra);
    if (!rc && completed == 0) {
        fprintf(stderr, "tokenmill bench: no request completed\n");
        rc = 1;
    }
    return rc;
}
