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

# The graph's tables as C fields (every attribute the .py sets; any other goes to the instance dict):
# each run reads several when it starts and at every step of its walk (runs.pxd types them so).
cdef class WorkflowGraph:
    cdef dict __dict__
    cdef public object program, workflow, ref_profiles, semantics, stages, model, max_tokens, hedge, alike
    cdef public object input_limits, fanouts, edges, cum, plain_next, stage_time, stage_var, node_time
    cdef public object remaining, remaining_std, steps, draw_cache, start_counters, _start_remaining
