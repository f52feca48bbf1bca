cimport cython
from runtime.simulator.calls cimport Call
from runtime.simulator.runs cimport Run
from runtime.simulator.engine cimport LLMEngine
from runtime.simulator.executor cimport ExecutorGroup
from runtime.policies.base cimport Adaptation, CallView, Decisions, ReplicaView, Route, StageLoad
from runtime.simulator.distributions cimport interarrival, run_rng
from runtime.simulator.events cimport SimClock, pop_event

# Not final: Cython rejects a final class that overrides a base method (call_finished).
cdef class Simulator(SimClock):
    cdef dict __dict__
    cdef public object program, policy, cfg, streams, trace, engines, executors, replicas, graphs, ref_profiles
    cdef public dict _candidates, _stage_load_parts, _stage_list, _lenders, _overrides, _hedge_width
    cdef public object _prune_hook, run_records, call_records, kv_samples, _arrival_rng, _mix, _pattern, _burstiness
    cdef public long llm_calls, active_runs, _next_id, _arrivals_left
    cdef public object _total_rate, _run_seed0, _token_cv, _service_family, _slo_scale
    cdef public Decisions _dec
    cdef public object _arrive_cb
    cdef public bint _adapts, _admits, _borrow, _borrow_spare, _record_calls, _plain_route, _no_views, _hedged

    cpdef _loop(self, list events)
    @cython.locals(run=Run, first=Call)
    cpdef _arrive(self, run)
    cpdef _deadline(self, Run run)
    @cython.locals(run=Run, v=CallView, now=object)
    cpdef CallView call_view(self, Call call)
    cpdef stage_load(self, stage, kind, model)
    # wait and w: backlog_s is always a Python float (see _least_backlog_replica), or 0.0 or inf.
    @cython.locals(queued=long, running=long, q=long, n=long, v=ReplicaView, wait=double, w=double,
                   reps=list, made=dict, sl=StageLoad)
    cpdef StageLoad _load(self, stage, tuple parts)
    @cython.locals(by_model=dict, got=tuple)
    cpdef tuple _stage_parts(self, stage, kind, model)
    cpdef Adaptation _adapt(self, CallView view, stage, tuple parts)
    cpdef dict stage_loads(self, Run run)
    @cython.locals(stages=list, parts=tuple, reps=list, queued=long)
    cpdef bint _standing_queue(self, Run run) except -1
    @cython.locals(run=Run, now=double, hedge=long, c=Call, e=LLMEngine, v=ReplicaView, by_model=dict,
                   excluding=bint, ad=Adaptation, route=Route, views=list, parts=tuple, cands=list,
                   n_own=Py_ssize_t, i=Py_ssize_t, lent=list, lent_views=list, llm=bint)
    cpdef dispatch(self, Call call, exclude=*)
    @cython.locals(run=Run, peer=Call, c=Call)
    cpdef call_finished(self, Call call)
    @cython.locals(view=CallView)
    cpdef _prune(self, run, Call call, loop, iteration)
    cpdef _record_run(self, Run run)

# backlog_s is always a Python float (the engines' and executors' refresh_view), so a C double compares the same.
@cython.locals(bv=ReplicaView, v=ReplicaView, b=double, bb=double, e=LLMEngine)
cpdef _least_backlog_replica(replicas)

@cython.locals(e=LLMEngine, x=ExecutorGroup)
cpdef ReplicaView _fresh_view(r)

@cython.locals(e=LLMEngine, x=ExecutorGroup)
cpdef _enqueue(replica, Call call, prio)

@cython.locals(e=LLMEngine, x=ExecutorGroup)
cpdef _name(replica)

cdef double _INF
cdef list _NO_LENDERS
