# Compiled build only (runtime.accel): the views every routing decision reads become C structs,
# so typed code reads a field at a fixed offset instead of a generic attribute lookup. Every field
# stays a Python object (no conversion): the values, and so the results, are the .py's.

cdef class CallView:
    cdef public object run_id, workflow, stage, kind, model, run_arrival_s, now_s, deadline_s
    cdef public object stage_expected_s, remaining_critical_path_s, remaining_std_s, attained_service_s
    cdef public object critical_path_service_s, prefix_key, input_tokens, output_tokens, attempt, enqueued_s
    cdef public object last_replica_id, prefix_tokens

cdef class ReplicaView:
    cdef public object replica_id, device, model, stages, role, queue_len, running, slots, kv_used_tokens
    cdef public object kv_capacity_tokens, resident_prefixes, speed, backlog_s, kv_bytes_per_token
    cdef public object link_bytes_per_s, borrowed, profile, pending_decode_tokens, queued_prefill_tokens
    cdef public object busy_until_s, estimate_cache, profile_cache

cdef class Route:
    cdef readonly object replica_id, decode_replica_id

# Read by every admission, adaptation and pruning decision: a C constructor, not the dataclass's
# interpreted __init__ (frozen: readonly fields).
cdef class StageLoad:
    cdef readonly object stage, queued, running, replicas, expected_wait_s, models
