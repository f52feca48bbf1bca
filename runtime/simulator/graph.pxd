# Compiled build only (runtime.accel): C-callable from the run walker (runs.pxd cimports it). Token
# counts are ints and the profile's coefficients floats (LatencyProfile), so C integers and doubles
# compute what the .py computes (every int is converted exactly where Python mixes it with a float).
cimport cython

cpdef double llm_standalone_s(p, long input_tokens, long output_tokens, long cached_tokens=*)

@cython.final
cdef class StandaloneTime:
    cdef readonly double prefill_fixed_s, prefill_per_token_s, decode_fixed_s, decode_per_seq_s
    cdef readonly double decode_per_kv_token_s

    @cython.locals(n=long, tokens=long, decode=double)
    cpdef double of(self, long input_tokens, long output_tokens, long cached_tokens=*)
