/* cost.h - what a million tokens cost when a rented host serves them at the measured
 * load, beside managed-API list prices, and the monthly volume at which renting the host
 * breaks even against each API tier.
 *
 * The host is paid by the hour whether busy or not, so at a measured load of I input and
 * O output tokens/s:
 *   USD per 1M output tokens = hourly / (O * 3600) * 1e6   (the whole cost on output)
 *   USD per 1M input tokens  = hourly / (I * 3600) * 1e6   (the whole cost on input)
 * An API bills both: for this workload's mix (I/O input tokens per output token) it
 * charges  mix_usd = out_price + in_price * I/O  per 1M output tokens. A month of the host
 * (730 hours) costs 730 * hourly, so self-hosting breaks even at
 *   breakeven output tokens/month = 730 * hourly / mix_usd * 1e6
 * and it can only get there if the host can serve that much: capacity = O * 3600 * 730.
 * Pure functions; any thread. */
#ifndef TM_BENCH_COST_H
#define TM_BENCH_COST_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TM_BENCH_HOURS_PER_MONTH 730.0

/* One managed-API price row; a range in the file ("1.00-1.50") becomes two rows. */
typedef struct tm_bench_price {
    char tier[32];       /* budget, mid, production, ... */
    char model[80];      /* the model's name, " (low)" / " (high)" for the ends of a range */
    double in_usd;       /* USD per 1M input tokens; < 0 unknown */
    double out_usd;      /* USD per 1M output tokens; < 0 unknown */
} tm_bench_price;

typedef struct tm_bench_prices {
    tm_bench_price *rows; /* (n,) owned */
    int n;
    char as_of[64];       /* from a "# as of: ..." line, or "" */
    char path[512];       /* the file read */
} tm_bench_prices;

/* Reads a tab-separated price file: '#' lines are comments ("# as of: DATE" names the
 * prices' date), the first other line is the header (tier, model, input_usd_per_mtok,
 * output_usd_per_mtok), then one row per model; a price is a number, a range "a-b", or
 * empty (unknown). Returns 0, TM_EIO (cannot open), TM_EFORMAT (a bad row: err names
 * the line) or TM_ENOMEM. */
int tm_bench_prices_load(const char *path, tm_bench_prices *out, char *err, size_t err_len);
void tm_bench_prices_free(tm_bench_prices *p);

typedef struct tm_bench_cost {
    double usd_per_hour;            /* the host */
    double input_tok_per_s;         /* measured */
    double output_tok_per_s;        /* measured */
    double usd_per_mtok_output;     /* < 0 when nothing was generated */
    double usd_per_mtok_input;      /* < 0 when no input was processed */
    double input_per_output;        /* the workload's mix, input tokens per output token */
    double monthly_usd;             /* TM_BENCH_HOURS_PER_MONTH * usd_per_hour */
    double monthly_capacity_output; /* output tokens the host serves in a month at this load */
} tm_bench_cost;

/* The host's cost at the measured throughputs (tokens/s). */
void tm_bench_cost_compute(double usd_per_hour, double input_tok_per_s, double output_tok_per_s,
                           tm_bench_cost *out);

/* Against one API row: the API's USD per 1M output tokens for this mix (< 0 when the
 * row lacks a price the mix needs), and the output tokens per month at which the host
 * breaks even (< 0 likewise). */
double tm_bench_cost_api_mix_usd(const tm_bench_cost *c, const tm_bench_price *p);
double tm_bench_cost_breakeven_output(const tm_bench_cost *c, const tm_bench_price *p);

/* Prints the report: the host's figures, then one line per API row. label names the
 * host ("1 GPU x $3.50/h"). prices may be NULL (no tiers printed). */
void tm_bench_cost_print(FILE *f, const char *label, const tm_bench_cost *c,
                         const tm_bench_prices *prices);

#ifdef __cplusplus
}
#endif
#endif
