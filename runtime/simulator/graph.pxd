# Compiled build only (runtime.accel): C-callable from the run walker (runs.pxd cimports it). Token
# counts are ints and the profile's coefficients floats (LatencyProfile), so C integers and doubles
# compute what the .py computes (every int is converted exactly where Python mixes it with a float).
cimport cython
@cython.locals(fixed=double, per_seq=double, per_kv=double, n=long, tokens=long, decode=double)
cpdef double llm_standalone_s(p, long input_tokens, long output_tokens, long cached_tokens=*)
