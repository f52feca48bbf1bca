# Compiled build only (runtime.accel): event times are Python floats (Simulator.at's and the engines'
# C doubles, boxed), finish steps ints far below 2**53 (exact as doubles) and seq numbers ints, so
# comparing them as a C double and a C integer computes the tuple comparison's result; C calls from
# the event loop and the engines (sim.pxd, engine.pxd).
cimport cython

# A heap key as a C double (an int through a C integer: exact below 2**53, as finish steps are).
@cython.locals(n=long)
cdef double _key(object x) except? -1.0

@cython.locals(ta=double, tb=double, sa=long, sb=long)
cdef bint _before(tuple a, tuple b) except -1

@cython.locals(parentpos=Py_ssize_t, parent=tuple, t=double, s=long, pt=double)
cdef void _rise(list events, Py_ssize_t pos, tuple item)

cpdef push_event(list events, tuple item)

@cython.locals(last=tuple, top=tuple, endpos=Py_ssize_t, pos=Py_ssize_t, childpos=Py_ssize_t,
               rightpos=Py_ssize_t, child=tuple, right=tuple)
cpdef tuple pop_event(list events)

from runtime.simulator.calls cimport Call

# The replicas' ``sim`` (engine.pxd, executor.pxd): the clock and the heap as C fields (``now`` is
# always a Python float in the .py: simulated times), at and call_finished as C calls.
cdef class SimClock:
    cdef public double now
    cdef public list _events
    cdef public long _seq

    cpdef at(self, double t, handler, arg=*)
    cpdef call_finished(self, Call call)
