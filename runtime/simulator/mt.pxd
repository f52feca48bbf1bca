# Compiled build only (runtime.accel): the generator's state is a C array of 32-bit words inside the
# object and its arithmetic C integers (64-bit: no product of two 32-bit words overflows; masks
# keep 32 bits, as in the .py), so random() is a C call that computes exactly the .py's value.
cimport cython

cdef unsigned long long _MASK, _UPPER, _LOWER, _MATRIX_A, _TEMPER_B, _TEMPER_C
cdef Py_ssize_t N
cdef unsigned int _START[624]

@cython.final
cdef class MersenneTwister:
    cdef unsigned int mt[624]
    cdef Py_ssize_t index

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, left=Py_ssize_t, stop=Py_ssize_t, prev=cython.uint)
    cpdef _seed(self, unsigned int[::1] key)
    @cython.locals(i=Py_ssize_t, prev=cython.uint)
    cpdef _seed_word(self, unsigned int k0)
    @cython.locals(left=Py_ssize_t, stop=Py_ssize_t)
    cpdef _seed_finish(self, unsigned int prev, Py_ssize_t i)
    # The draws cannot raise (C integer arithmetic on the state, no Python object): noexcept spares
    # every caller an error check per draw, and _word, a C-only inline function, its call.
    @cython.locals(i=Py_ssize_t, y=cython.ulonglong, v=cython.ulonglong)
    cdef inline unsigned long long _word(self) noexcept
    @cython.locals(a=cython.ulonglong, b=cython.ulonglong)
    cpdef double random(self) noexcept
