cimport cython
from runtime.policies.base cimport CallView, ReplicaView

# A view's call-independent terms as C fields (read, not unpacked, by every estimate).
@cython.final
cdef class _Terms:
    cdef public double c, base, k_, bc, s_, wait
    cdef public long queued, kv, grow, b, pending
    cdef public bint has_wait

# (finish, marginal) as a C pair: no tuple or floats allocated for a compiled caller (Python callers
# get a tuple of the same two floats).
cpdef (double, double) estimate(CallView call, ReplicaView r)

cpdef (double, double) estimate_for(ReplicaView r, long inp, long out, pkey, long ptoks, double now, double expected)

@cython.locals(terms=_Terms, k_=double, b=long, pending=long, fill=long, ctx=double, finish=double,
               busy_until=double, shared=long, kv_join=long)
cpdef (double, double) estimate_at(ReplicaView r, long inp, long out, bint resident, long ptoks, double now,
                                   double expected)

# A C call from the Cortex router (every borrowed candidate).
@cython.locals(terms=_Terms)
cpdef bint prefill_monotone(ReplicaView r) except -1

# A profile's constants as C doubles (the .py's values are always Python floats: LatencyProfile's fields).
@cython.final
cdef class _ProfileConstants:
    cdef public object p
    cdef public double f, s_, k_, c, p0

@cython.locals(b=long, q=long, m=long, f=double, s_=double, k_=double, c=double, kv=long, pending=long, short=long,
               b_new=long, t=_Terms, pc=_ProfileConstants, has_wait=bint, wait=double)
cpdef _Terms _replica_terms(ReplicaView r, p)

# KV a call newly takes on a replica (its prefix shared where resident): a C integer for the routers.
cpdef long kv_need(ReplicaView r, long inp, long out, pkey, long ptoks)
cpdef long kv_need_at(long inp, long out, long ptoks, bint resident)
