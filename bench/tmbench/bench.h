/* bench.h - `tokenmill bench`: the command line of the load generator. */
#ifndef TM_BENCH_BENCH_H
#define TM_BENCH_BENCH_H

#ifdef __cplusplus
extern "C" {
#endif

/* Runs `tokenmill bench` with argv[0] = "bench"; returns the process exit code: 0 when
 * requests completed, 1 when none did or the server cannot be used, 2 for bad options. */
int tm_bench_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
