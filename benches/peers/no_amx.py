"""Runs a Python script with llama.cpp's extra weight buffers (AMX repacking) off.

Some virtual machines report AMX in cpuinfo without enabling its tile state,
and llama.cpp then dies with SIGILL at its first batched product (`tilezero`).
This sets `use_extra_bufts = False` in every model's parameters, which keeps
llama.cpp on its AVX2/AVX-512 kernels, then runs the script as __main__.

    python benches/peers/no_amx.py SCRIPT [ARGS ...]
"""
import os, runpy, sys
import llama_cpp

_default = llama_cpp.llama_model_default_params

def _params():
    p = _default()
    p.use_extra_bufts = False
    return p

llama_cpp.llama_model_default_params = _params
llama_cpp.llama_cpp.llama_model_default_params = _params
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
