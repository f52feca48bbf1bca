cimport cython
from runtime.simulator.calls cimport Call
from runtime.policies.base cimport ReplicaView
from runtime.simulator.events cimport SimClock

@cython.final
cdef class ExecutorGroup:
    cdef public SimClock sim
    cdef public object spec, name, _finish_cb
    cdef public ReplicaView view
    cdef public long slots, busy_slots, nwaiting
    cdef public list waiting
    # Sums of service times, always Python floats in the .py (they start at 0.0): C doubles add,
    # subtract and divide (by the slot count) to the same values, without a float object each.
    cdef public double queued_work, running_work
    cdef public object busy_s
    cdef public bint dirty

    @cython.locals(v=ReplicaView)
    cpdef refresh_view(self)
    cpdef enqueue(self, Call call, prio)
    cpdef cancel(self, Call call)
    cpdef _start(self, Call call)
    cpdef _free(self, Call call)
    cpdef on_finish(self, Call call)
