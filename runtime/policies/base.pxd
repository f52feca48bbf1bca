# Compiled build only (runtime.accel): the views every routing decision reads become C structs,
# so typed code reads a field at a fixed offset instead of a generic attribute lookup. Every field
# stays a Python object (no conversion): the values, and so the results, are the .py's -- except
# ReplicaView's numbers (below).

cdef class CallView:
    cdef public object run_id, workflow, stage, kind, model, run_arrival_s, now_s, deadline_s
    cdef public object stage_expected_s, remaining_critical_path_s, remaining_std_s, attained_service_s
    cdef public object critical_path_service_s, prefix_key, input_tokens, output_tokens, attempt, enqueued_s
    cdef public object last_replica_id, prefix_tokens

# ReplicaView's counts are C integers (64-bit, overflow-checked: an OverflowError, never a wrapped
# value) and its backlog and busy-until times C doubles: every router reads them for every candidate
# of every call, and the engines write them at every refresh (no Python int or float allocated). They
# hold the same values: the counts are always Python ints (a float raises TypeError) and the two
# times always Python floats (an int given to the constructor reads back as the equal float; every
# use is float arithmetic or a comparison, so the results are the same). ``borrowed`` is a C flag.
cdef class ReplicaView:
    cdef public object replica_id, device, model, stages, role
    cdef public long queue_len, running, slots, kv_used_tokens, kv_capacity_tokens
    cdef public object resident_prefixes, speed
    cdef public double backlog_s
    cdef public object kv_bytes_per_token, link_bytes_per_s
    cdef public bint borrowed
    cdef public object profile
    cdef public long pending_decode_tokens, queued_prefill_tokens
    cdef public double busy_until_s
    cdef public object estimate_cache, profile_cache

cimport cython

cdef class Route:
    cdef readonly object replica_id, decode_replica_id

cdef dict _ROUTES
@cython.locals(r=Route)
cpdef Route route_to(replica_id)
@cython.locals(r=Route)
cpdef Route _new_route(replica_id)

# What the simulator reads from every adaptation (frozen: readonly fields).
cdef class Adaptation:
    cdef readonly object model, hedge

# Read by every admission, adaptation and pruning decision: a C constructor, not the dataclass's
# interpreted __init__ (frozen: readonly fields).
# Its counts are C integers and its expected wait a C double, as ReplicaView's (always Python ints
# and a Python float: a sum of counts, a backlog, 0.0 or inf).
cdef class StageLoad:
    cdef readonly object stage
    cdef readonly long queued, running, replicas
    cdef readonly double expected_wait_s
    cdef readonly object models

cdef bint _COMPILED

# The simulator's per-arrival and per-dispatch decisions: C calls (a vtable), not Python calls on the policy's bound
# methods. Overridden (cdef subclass) by policies whose decisions are typed module functions.
cdef class Decisions:
    cdef readonly object policy
    cpdef admit_without_load(self, CallView call)
    cpdef admit_without_queue(self, CallView call)
    cpdef admit(self, CallView call, dict load)
    cpdef adapt_without_load(self, CallView call, tuple models)
    cpdef adapt(self, CallView call, StageLoad load)
    cpdef route(self, CallView call, list candidates)
    cpdef prune_without_load(self, CallView call)
    cpdef bint prune_retry(self, CallView call, loop, iteration, StageLoad load) except -1
    cpdef Py_ssize_t pick(self, CallView call, list own, list lenders) except? -3
    cpdef priority(self, CallView call)

