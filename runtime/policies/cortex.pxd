cimport cython
from runtime.policies.base cimport CallView, ReplicaView, StageLoad
# A C call, not a Python one, from _best_colocated (the .py's ``from ... import`` resolves to it).
from runtime.policies.placement cimport estimate_for, kv_need

cpdef slack_s(CallView call)

# KV sizes (the views' Python ints) compared as C integers: the same results.
@cython.locals(inp=long, out=long, ptoks=long, now=double, expected=double, best_cost=double,
               finish=double, marginal=double, cost=double, margin=double, r=ReplicaView, best=ReplicaView,
               n_own=Py_ssize_t, any_room=bint, cap=long, used=long, borrow_margin=double,
               idle_borrow_margin=double, coarse_borrow_margin=double)
cpdef _best_colocated(CallView call, candidates, double w, policy)

cpdef tuple _latest_start_key(CallView call)

@cython.locals(s=StageLoad, bottleneck=StageLoad)
cpdef _bottleneck(load)

cdef double _INF
