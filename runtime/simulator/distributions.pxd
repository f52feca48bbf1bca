# Compiled build only (runtime.accel): C-callable from the run walker and the event loop (runs.pxd
# and sim.pxd cimport them); arguments and results stay Python objects, as in the .py.
cpdef seeded_rng(seed)
cpdef run_rng(seed)
cpdef sample(rng, mean, cv, family=*)
cpdef normal(rng, mu, sigma)
cpdef interarrival(rng, rate, pattern=*, burstiness=*)
# math.* in the .py is libm's (C calls), as in runs.pxd: the same values for the positive, finite
# arguments sample, normal and interarrival pass.
from libc cimport math
