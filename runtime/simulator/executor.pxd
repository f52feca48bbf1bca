cimport cython
from runtime.simulator.calls cimport Call

@cython.final
cdef class ExecutorGroup:
    cdef public object sim, spec, name, view, _finish_cb
    cdef public long slots, busy_slots, nwaiting
    cdef public list waiting
    cdef public object queued_work, running_work, busy_s
    cdef public bint dirty

    cpdef refresh_view(self)
    cpdef enqueue(self, Call call, prio)
    cpdef cancel(self, Call call)
    cpdef _start(self, Call call)
    cpdef _free(self, Call call)
    cpdef on_finish(self, Call call)
