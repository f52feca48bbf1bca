# Compiled build only (runtime.accel): C-callable from the run walker (runs.pxd cimports it);
# arguments and result stay Python objects, so it computes what the .py computes.
cpdef llm_standalone_s(p, input_tokens, output_tokens, cached_tokens=*)
