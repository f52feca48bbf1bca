cimport cython
from runtime.policies.base cimport CallView, Decisions, ReplicaView, StageLoad, Route, route_to
# A C call, not a Python one, from _best_colocated (the .py's ``from ... import`` resolves to it).
from runtime.policies.placement cimport estimate_at, kv_need_at, prefill_monotone

# The view's times are Python floats (simulated or monotonic clock times and standalone estimates):
# C doubles subtract them to the same values.
@cython.locals(deadline=double, now=double, remaining=double)
cpdef double slack_s(CallView call) except? -1.0

# The parameters as C doubles: every use converts them to a double already (the w and margin
# arguments and locals of _best_colocated), or multiplies one by a Python float.
@cython.final
cdef class _RouteKnobs:
    cdef public double urgent_slack_factor, marginal_weight, borrow_margin, idle_borrow_margin
    cdef public double coarse_borrow_margin
    cdef public bint malleable, hedge_executors, prune_hopeless, admission

# The last policy asked and its knobs: C globals (an identity test, no dictionary lookup).
cdef object _last_policy
cdef _RouteKnobs _last_knobs

@cython.locals(knobs=_RouteKnobs)
cpdef _RouteKnobs _knobs(policy)

@cython.locals(bottleneck=StageLoad, wait=double)
cpdef _admit(_RouteKnobs knobs, CallView call, load)

cpdef bint _prune_retry(_RouteKnobs knobs, CallView call, StageLoad load) except -1
cpdef _prune_without_load(_RouteKnobs knobs, CallView call)

cpdef _adapt(_RouteKnobs knobs, CallView call, StageLoad load)

cpdef _admit_without_load(_RouteKnobs knobs, CallView call)
cpdef _adapt_without_load(_RouteKnobs knobs, CallView call, tuple models)

# The simulator's decisions as C calls of the functions above (base.Decisions' vtable).
cdef class _CortexDecisions(Decisions):
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

@cython.locals(expected=double)
cpdef double _weight(CallView call, _RouteKnobs knobs) except? -1.0

@cython.locals(knobs=_RouteKnobs, first=ReplicaView, w=double, best=ReplicaView)
cpdef _route(policy, CallView call, candidates)

@cython.locals(knobs=_RouteKnobs, first=ReplicaView)
cpdef Py_ssize_t _pick(policy, CallView call, list own, list lenders) except? -3

@cython.locals(own=list, lenders=list, i=Py_ssize_t)
cpdef _best_colocated(CallView call, candidates, double w, _RouteKnobs knobs)

# KV sizes (the views' Python ints) compared as C integers: the same results.
@cython.locals(inp=long, out=long, ptoks=long, now=double, expected=double, best_cost=double,
               finish=double, marginal=double, cost=double, margin=double, r=ReplicaView, best=Py_ssize_t,
               n_own=Py_ssize_t, any_room=bint, resident=bint, cap=long, used=long, borrow_margin=double,
               idle_borrow_margin=double, coarse_borrow_margin=double, i=Py_ssize_t, j=Py_ssize_t,
               roomy=Py_ssize_t, roomy_cost=double, bounded=bint, best_r=ReplicaView, roomy_r=ReplicaView)
cpdef Py_ssize_t _pick_colocated(CallView call, list own, list lenders, double w, _RouteKnobs knobs) except? -3

@cython.locals(deadline=double, remaining=double, now=double, latest_start=double, hopeless=double)
cpdef tuple _latest_start_key(CallView call)

@cython.locals(s=StageLoad, bottleneck=StageLoad)
cpdef _bottleneck(load)

cdef double _INF
