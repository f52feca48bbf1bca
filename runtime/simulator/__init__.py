"""The discrete-event cluster simulator (every output is labelled "simulated").

Entry points: :class:`runtime.simulator.sim.Simulator` (one workload, one
layout, one policy), layouts in :mod:`runtime.simulator.cluster`, traces in
:mod:`runtime.simulator.trace`, the SLO-scale search in
:mod:`runtime.simulator.slo_scale`. See docs/simulator.md.
"""
