cimport cython

@cython.locals(terms=tuple, c=double, queued=long, base=double, k_=double, kv=long, grow=long, b=long, bc=double,
               pending=long, s_=double, inp=long, out=long, fill=long, ctx=double, finish=double, busy_until=double,
               shared=long)
cpdef tuple estimate(call, r)

@cython.locals(b=long, q=long, m=long, f=double, s_=double, k_=double, c=double, kv=long, pending=long, short=long,
               b_new=long)
cpdef tuple _replica_terms(r, p)
