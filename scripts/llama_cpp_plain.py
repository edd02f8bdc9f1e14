"""Imported for its effect: llama-cpp-python loads weights without llama.cpp's "extra buffer
types" (AMX, CPU repacking), the plain ggml CPU path.

The wheel is built with -march=native. On machines that report AMX but fault on tile
instructions (some VMs) the AMX weight buffers crash llama_decode; the plain path gives the
same results to within float rounding anywhere. The golden scripts import this module
before they load a model."""
import llama_cpp.llama as llama_mod

_default_model_params = llama_mod.llama_cpp.llama_model_default_params


def _model_params_without_extra_bufts():
    p = _default_model_params()
    p.use_extra_bufts = False
    return p


llama_mod.llama_cpp.llama_model_default_params = _model_params_without_extra_bufts
