cimport cython
@cython.final
cdef class Call:
    cdef public object run, key, stage, kind, model, prefix_key, group, hedge_peers, prio, replica
    cdef public object decode_replica, phase, view, edge_u
    cdef public object input_tokens, output_tokens, attempt
    cdef public object service_s, standalone_s, expected_s, remaining_cp_s, remaining_std_s, cp_service_s
    # prefix_tokens: always an int (a stage's or a trace's prefix length); a C integer for the engine's KV sums.
    cdef public long seq, state, admit_step, finish_step, remaining, own_tokens, ctx, chunk_left, prefix_tokens
    cdef public double t_enqueue, t_start, t_end
    cdef public bint cached_prefix

    cpdef _init(self, run, key, stage, kind, model, input_tokens, output_tokens, prefix_key, prefix_tokens,
                service_s, standalone_s, expected_s, remaining_cp_s, remaining_std_s, group, attempt, cp_service_s)

@cython.locals(c=Call)
cpdef Call new_call(run, key, stage, kind, model, input_tokens, output_tokens, prefix_key, prefix_tokens,
                    service_s, standalone_s, expected_s, remaining_cp_s, remaining_std_s, group, attempt,
                    cp_service_s)
