cimport cython
from runtime.policies.base cimport CallView, ReplicaView
# A C call, not a Python one, from _best_colocated (the .py's ``from ... import`` resolves to it).
from runtime.policies.placement cimport estimate_for

cpdef slack_s(CallView call)

# ``need`` (the call's whole context) stays a Python int: it is compared with Python ints on every
# candidate, and a C integer would be boxed again for each comparison.
@cython.locals(inp=long, out=long, ptoks=long, now=double, expected=double, need=object, best_cost=double,
               finish=double, marginal=double, cost=double, margin=double, r=ReplicaView, best=ReplicaView)
cpdef _best_colocated(CallView call, candidates, double w, double borrow_margin, double idle_borrow_margin,
                      double coarse_borrow_margin)
