/* cost.c - the cost report (definitions in cost.h). */
#include "bench/tmbench/cost.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

void tm_bench_prices_free(tm_bench_prices *p) {
    if (!p) return;
    free(p->rows);
    memset(p, 0, sizeof *p);
}

/* Trims spaces at both ends, in place. */
static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* A price cell: "" -> lo = hi = -1; "2.5" -> lo = hi = 2.5; "1-2" -> 1, 2. 0 or -1. */
static int parse_price(char *s, double *lo, double *hi) {
    s = trim(s);
    *lo = *hi = -1;
    if (!*s) return 0;
    char *end;
    errno = 0;
    double a = strtod(s, &end);
    if (errno || end == s || !(a >= 0)) return -1;
    double b = a;
    end = trim(end);
    if (*end == '-') {
        char *s2 = end + 1, *e2;
        b = strtod(s2, &e2);
        if (errno || e2 == s2 || !(b >= a) || *trim(e2)) return -1;
    } else if (*end) {
        return -1;
    }
    *lo = a;
    *hi = b;
    return 0;
}

static int add_row(tm_bench_prices *p, int *cap, const char *tier, const char *model,
                   const char *suffix, double in, double out) {
    if (p->n == *cap) {
        int c = *cap ? *cap * 2 : 16;
        tm_bench_price *r = realloc(p->rows, sizeof *r * (size_t)c);
        if (!r) return TM_ENOMEM;
        p->rows = r;
        *cap = c;
    }
    tm_bench_price *r = &p->rows[p->n++];
    snprintf(r->tier, sizeof r->tier, "%s", tier);
    snprintf(r->model, sizeof r->model, "%s%s", model, suffix);
    r->in_usd = in;
    r->out_usd = out;
    return 0;
}

int tm_bench_prices_load(const char *path, tm_bench_prices *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", path);
    FILE *f = fopen(path, "r");
    if (!f) return tm_fail(err, err_len, TM_EIO, "cannot open the price file %s: %s", path, strerror(errno));
    char line[1024];
    int lineno = 0, header = 0, cap = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = tm_fail(err, err_len, TM_EFORMAT, "%s:%d: line longer than %zu bytes", path, lineno,
                         sizeof line - 2);
            break;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == '#') {
            const char *k = strstr(line, "as of:");
            if (k && !out->as_of[0]) snprintf(out->as_of, sizeof out->as_of, "%s", trim((char *)k + 6));
            continue;
        }
        if (strspn(line, " \t") == strlen(line)) continue; /* blank (trim would eat an empty last cell) */
        char *cols[4] = {0};
        int nc = 0;
        for (char *s = line, *tab; nc < 4; s = tab + 1) {
            cols[nc++] = s;
            if (!(tab = strchr(s, '\t'))) break;
            *tab = 0;
        }
        if (nc != 4) {
            rc = tm_fail(err, err_len, TM_EFORMAT, "%s:%d: expected 4 tab-separated columns (tier, "
                         "model, input_usd_per_mtok, output_usd_per_mtok), got %d", path, lineno, nc);
            break;
        }
        if (!header) { /* the column names */
            header = 1;
            continue;
        }
        double in_lo, in_hi, out_lo, out_hi;
        if (parse_price(cols[2], &in_lo, &in_hi) || parse_price(cols[3], &out_lo, &out_hi)) {
            rc = tm_fail(err, err_len, TM_EFORMAT, "%s:%d: a price is a number, a range such as "
                         "1.00-1.50, or empty", path, lineno);
            break;
        }
        const char *tier = trim(cols[0]), *model = trim(cols[1]);
        if (in_lo == in_hi && out_lo == out_hi) rc = add_row(out, &cap, tier, model, "", in_lo, out_lo);
        else if (!(rc = add_row(out, &cap, tier, model, " (low)", in_lo, out_lo)))
            rc = add_row(out, &cap, tier, model, " (high)", in_hi, out_hi);
        if (rc) {
            tm_fail(err, err_len, rc, "out of memory");
            break;
        }
    }
    fclose(f);
    if (!rc && !header) rc = tm_fail(err, err_len, TM_EFORMAT, "%s: no header line", path);
    if (rc) tm_bench_prices_free(out);
    return rc;
}

void tm_bench_cost_compute(double usd_per_hour, double input_tok_per_s, double output_tok_per_s,
                           tm_bench_cost *c) {
    memset(c, 0, sizeof *c);
    c->usd_per_hour = usd_per_hour;
    c->input_tok_per_s = input_tok_per_s;
    c->output_tok_per_s = output_tok_per_s;
    c->usd_per_mtok_output = output_tok_per_s > 0 ? usd_per_hour / (output_tok_per_s * 3600.0) * 1e6 : -1;
    c->usd_per_mtok_input = input_tok_per_s > 0 ? usd_per_hour / (input_tok_per_s * 3600.0) * 1e6 : -1;
    c->input_per_output = output_tok_per_s > 0 ? input_tok_per_s / output_tok_per_s : 0;
    c->monthly_usd = usd_per_hour * TM_BENCH_HOURS_PER_MONTH;
    c->monthly_capacity_output = output_tok_per_s * 3600.0 * TM_BENCH_HOURS_PER_MONTH;
}

double tm_bench_cost_api_mix_usd(const tm_bench_cost *c, const tm_bench_price *p) {
    if (p->out_usd < 0 || c->output_tok_per_s <= 0) return -1;
    if (c->input_per_output > 0 && p->in_usd < 0) return -1;
    return p->out_usd + (c->input_per_output > 0 ? p->in_usd * c->input_per_output : 0);
}

double tm_bench_cost_breakeven_output(const tm_bench_cost *c, const tm_bench_price *p) {
    double mix = tm_bench_cost_api_mix_usd(c, p);
    if (!(mix > 0)) return -1;
    return c->monthly_usd / mix * 1e6;
}

/* 1234567 -> "1.23M" */
static const char *human(double v, char *buf, size_t n) {
    const char *unit[] = {"", "k", "M", "B", "T"};
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    snprintf(buf, n, "%.3g%s", v, unit[u]);
    return buf;
}

void tm_bench_cost_print(FILE *f, const char *label, const tm_bench_cost *c,
                         const tm_bench_prices *prices) {
    char a[32], b[32];
    fprintf(f, "%-40s %s\n", "Host:", label);
    if (c->usd_per_mtok_output >= 0)
        fprintf(f, "%-40s %-10.4f\n", "USD per 1M output tokens:", c->usd_per_mtok_output);
    else
        fprintf(f, "%-40s %s\n", "USD per 1M output tokens:", "- (no output)");
    if (c->usd_per_mtok_input >= 0)
        fprintf(f, "%-40s %-10.4f\n", "USD per 1M input tokens:", c->usd_per_mtok_input);
    fprintf(f, "%-40s %-10.2f\n", "Input tokens per output token:", c->input_per_output);
    fprintf(f, "%-40s %.2f for %s output tokens at this load\n", "Host per month (730 h), USD:",
            c->monthly_usd, human(c->monthly_capacity_output, a, sizeof a));
    if (!prices || prices->n == 0) return;
    fprintf(f, "Managed APIs (%s%s%s), break-even in output tokens/month at this mix:\n", prices->path,
            prices->as_of[0] ? ", prices as of " : "", prices->as_of);
    fprintf(f, "  %-16s %-24s %8s %8s %10s %14s\n", "tier", "model", "in $/M", "out $/M", "mix $/M",
            "break-even");
    for (int i = 0; i < prices->n; i++) {
        const tm_bench_price *p = &prices->rows[i];
        double mix = tm_bench_cost_api_mix_usd(c, p), be = tm_bench_cost_breakeven_output(c, p);
        char in[16] = "-", out[16] = "-", mx[16] = "-", bes[48] = "- (no price)";
        if (p->in_usd >= 0) snprintf(in, sizeof in, "%.3f", p->in_usd);
        if (p->out_usd >= 0) snprintf(out, sizeof out, "%.3f", p->out_usd);
        if (mix >= 0) snprintf(mx, sizeof mx, "%.3f", mix);
        if (be >= 0)
            snprintf(bes, sizeof bes, "%s%s", human(be, b, sizeof b),
                     be > c->monthly_capacity_output ? " (over capacity)" : "");
        fprintf(f, "  %-16s %-24s %8s %8s %10s %14s\n", p->tier, p->model, in, out, mx, bes);
    }
}
