/* model.c - llama-family forward pass (in progress) */
