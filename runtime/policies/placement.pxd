cimport cython
from runtime.policies.base cimport CallView, ReplicaView

cpdef tuple estimate(CallView call, ReplicaView r)

@cython.locals(terms=tuple, c=double, queued=long, base=double, k_=double, kv=long, grow=long, b=long, bc=double,
               pending=long, s_=double, fill=long, ctx=double, finish=double, busy_until=double, shared=long,
               kv_join=long)
cpdef tuple estimate_for(ReplicaView r, long inp, long out, pkey, long ptoks, double now, double expected)

@cython.locals(b=long, q=long, m=long, f=double, s_=double, k_=double, c=double, kv=long, pending=long, short=long,
               b_new=long)
cpdef tuple _replica_terms(ReplicaView r, p)
