cimport cython
from runtime.simulator.calls cimport Call
from runtime.policies.base cimport ReplicaView
from runtime.simulator.events cimport SimClock, pop_event, push_event

@cython.final
cdef class LLMEngine:
    cdef public SimClock sim
    cdef public object spec, name, p, role, preempts, _tick_cb, prefixes
    cdef public ReplicaView view
    cdef public Call chunking
    cdef public long max_batch, block, cap, max_batched_tokens
    cdef public bint preemptive, busy, in_tick, ep_single, dirty
    cdef public double F, S, K, C, P0, ep_t0, busy_s
    cdef public object cores
    cdef public double F0, S0, K0, C0, P00, ep_end, ep_f, ep_D, ep_P
    cdef public list waiting, fin, pending_cancel
    cdef public dict running
    cdef public long nwaiting, step, kv_own, kv_attn, prefix_total, version, ep_n, ep_b, ep_k0
    cdef public long sum_finish, queued_prefill, queued_out, kv_peak, preemptions, iterations, partial_prefills

    cpdef warm(self, key, long tokens)
    cpdef share_cores(self, cores)
    @cython.locals(x=double, fd=double, fp=double)
    cpdef _scale_for_contention(self)
    cpdef _epoch_parts(self, long prefill, long b, long k, double end)
    cpdef _went(self, bint busy)
    @cython.locals(f=double, now=double, done=long, end=double)
    cpdef _recontend(self)
    @cython.locals(b=long, nw=long, pending=long, eff=long, step=double, v=ReplicaView)
    cpdef refresh_view(self)
    @cython.locals(b=long)
    cpdef double _epoch_s(self, long n)
    # elapsed is a difference of simulated times (Python floats); n a step count (a C integer, as the
    # int() of a float in the .py: the same value).
    @cython.locals(b=long, K=double, a=double, step0=double, lin=double, n=long, kb=double)
    cpdef long _steps_done(self, double elapsed)
    cpdef double _iteration_s(self, long prefill, long b, long k)
    cpdef enqueue(self, Call call, prio)
    cpdef cancel(self, Call call)
    @cython.locals(done=long, n=long, end=double)
    cpdef _interrupt(self)
    # version: always an int (this engine's epoch counter), compared as a C integer (no boxed self.version).
    cpdef on_tick(self, long version)
    @cython.locals(n=long, b=long, now=double, step=long, fstep=long, call=Call, sim=SimClock, top=tuple)
    cpdef _settle(self)
    @cython.locals(own=long)
    cpdef _release(self, Call call)
    @cython.locals(generated=long)
    cpdef _preempt(self, Call call)
    cpdef _head_preempts(self)
    cpdef long _held_after(self, long own, long left)
    @cython.locals(own=long)
    cpdef long _chunk_growth(self, Call call, long chunk)
    cpdef _evict_prefixes(self, need, keep)
    @cython.locals(now=double, b_old=long, k_old=long, prefill=long, decode=bint, ptoks=long, resident=bint,
                   ctx=long, fill=long, need=long, growth=long, used=long, dt=double, end=double, b=long, n=long,
                   n_kv=long, k0=long, K=double, t=double, call=Call, c=Call, worst=Call,
                   budget_max=long, budget=long, chunk=long, own=long, preempted=bint, admit=bint, sim=SimClock,
                   top=tuple, fstep=long)
    cpdef _schedule(self)
    @cython.locals(ctx=long, tokens=long, own=long, left=long, held=long)
    cpdef _admit(self, Call call, pkey, long ptoks, bint resident, long fill, long chunk)
    @cython.locals(grow=long)
    cpdef _prefill_chunk(self, Call call, long chunk)
    @cython.locals(remaining=long, step=long, finish=long)
    cpdef _join(self, Call call)
    cpdef _drop_chunk(self, Call call)

# math.sqrt in the .py (_steps_done) is libm's: the same value for the positive argument it gets.
from libc cimport math
