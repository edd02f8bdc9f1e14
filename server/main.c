/* main.c - the tokenmill command line (placeholder until the CLI lands). */
#include <stdio.h>
int main(void) { fprintf(stderr, "tokenmill: not built yet\n"); return 1; }
