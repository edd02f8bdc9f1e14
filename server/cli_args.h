/* cli_args.h - number parsing for the command line, shared by every subcommand. */
#ifndef TM_CLI_ARGS_H
#define TM_CLI_ARGS_H

/* Parses s as an integer in [lo, hi] into *out. On failure prints
 * "tokenmill <cmd>: <opt> expects an integer in [lo, hi], got '<s>'" and returns -1. */
int tm_cli_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
/* The same for a float in [lo, hi]. */
int tm_cli_float(const char *cmd, const char *opt, const char *s, float lo, float hi, float *out);

#endif
