/* generate.h - `tokenmill generate`: one prompt through the engine, the continuation
 * streamed to stdout. */
#ifndef TM_GENERATE_H
#define TM_GENERATE_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is "generate"; the rest are its options (see `tokenmill --help`). stdout gets
 * exactly the generated text, nothing else (no trailing newline); the prompt, errors and
 * timings go to stderr. Returns the process exit status (0, 1 on a runtime error, 2 on a
 * usage error). Main thread only. */
int tm_generate_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
