cimport cython
from runtime.simulator.calls cimport Call, new_call
# C calls, not Python ones, from the walk (the .py's ``from ... import`` resolves to them).
from runtime.simulator.distributions cimport sample
from runtime.simulator.graph cimport StandaloneTime, WorkflowGraph
# The run's generator is the C one (distributions.run_rng): rng.random() is a C call.
from runtime.simulator.mt cimport MersenneTwister

cdef class Run:
    cdef public object run_id, workflow, arrival_s, deadline_s, standalone_s, status, end_s, attained_s
    cdef public dict last_replica
    cdef public object rejected_reason, lighter
    cdef public long outstanding, pruned, ncalls

    cpdef _init(self, run_id, workflow, arrival_s)
    # Overridden by IRRun (C) and by Python subclasses (trace.TraceRun), which cpdef dispatch finds.
    cpdef first_calls(self)
    cpdef on_done(self, Call call, prune)

@cython.final
cdef class _Walk:
    cdef public object sem, prefix, counters, visits, fan, branch, current, child

@cython.final
cdef class _Fan:
    cdef public object node, key, walk, open, cp
    cdef public bint done

# value: mu (a float, params' first item: _token_params), 0.0 or exp(...), always a float.
@cython.locals(value=double, runaway=double)
cpdef _tokens(MersenneTwister rng, tuple params)
@cython.locals(n=long, f=double, d=double)
cpdef _rounded(double value, long low, high)
cpdef double _lognormal(MersenneTwister rng, double mu, double sigma)
@cython.locals(u1=double, u2=double, z=double)
cpdef double _normal(MersenneTwister rng)
@cython.locals(runaway=double, w=double, level=double)
cpdef _alike_tokens(MersenneTwister rng, tuple params, double latent, double r)
@cython.locals(s2=double)
cpdef _sample(MersenneTwister rng, mean, cv, family)
cpdef _service(MersenneTwister rng, tuple draw, family)
# C calls from IRRun.__init__ (every arrival), not Python ones.
cpdef dict _draw_params(WorkflowGraph g, token_cv, family)
cpdef double _run_latent(WorkflowGraph g, MersenneTwister rng) except? -1.0
@cython.locals(n=Py_ssize_t, i=Py_ssize_t, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, c=double)
cpdef Py_ssize_t _edge_index(list cum, double u) except? -1
# Loop counters are small ints: C integers sum them to the same int (overflow-checked).
@cython.locals(total=long, c=long)
cpdef long _count_sum(tuple counters) except? -1
@cython.locals(steps=dict)
cpdef _take(WorkflowGraph g, node, Py_ssize_t i, tuple counters)

@cython.final
cdef class IRRun(Run):
    cdef public WorkflowGraph g
    cdef public object sem, token_cv, _family
    cdef public _Walk top
    cdef public dict script, widths, _draws, _cum, _plain_next, _fanouts
    cdef public MersenneTwister rng
    cdef public double latent

    cpdef _start(self, WorkflowGraph g, run_id, arrival_s, rng, token_cv, service_family)
    @cython.locals(rng=MersenneTwister, draw=tuple, st=StandaloneTime)
    cpdef _sizes(self, tuple key, stage)
    cpdef _edge_u(self, tuple key)
    cpdef _call_time(self, tuple key, stage)
    @cython.locals(g=WorkflowGraph, t=double, v=long, draw=tuple, st=StandaloneTime, rng=MersenneTwister, script=dict,
                   draws=dict, cums=dict, plain_next=dict, visits=dict, fanouts=dict)
    cpdef _dry_walk(self)
    @cython.locals(draw=tuple, sizes=tuple, top=_Walk, c=Call)
    cpdef Call _make_call(self, tuple key, stage, cp, group=*)
    @cython.locals(v=long, c=Call, visits=dict)
    cpdef _enter(self, _Walk walk, node, cp, Call call, prune)
    @cython.locals(fan=_Fan)
    cpdef _done(self, Call call, _Walk walk, prune)
    cpdef _start_fan(self, _Walk walk, node, tuple key, cp, Call call, prune)
    cpdef _leave(self, _Walk walk, node, Call call, u, cp, prune)
    cpdef _branch_end(self, _Walk branch, bint ok, cp, Call call, prune)
    cpdef _fan_end(self, _Fan fan, Call call, prune)

cdef double _NV
cdef frozenset _ENDS
# math.log/exp/log1p/sqrt in the .py are libm's (C calls): math's are libm's too, for the finite,
# positive arguments they get here (an error case would differ: a ValueError/OverflowError vs nan/inf).
from libc cimport math
