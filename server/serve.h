/* serve.h - `tokenmill serve`: the OpenAI-compatible HTTP server's entry point. */
#ifndef TM_SERVE_H
#define TM_SERVE_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is "serve"; the rest are the serve options (see `tokenmill serve --help`).
 * Runs until SIGINT/SIGTERM; returns the process exit status (0 after a graceful stop,
 * 1 on a startup error, 2 on a usage error). Main thread only. */
int tm_serve_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
