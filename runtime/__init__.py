"""The Cortex runtime: engines, SQL executors, the workflow-aware orchestrator and the simulator."""

from runtime import accel as _accel

# Before any simulator module is imported: load the hot ones compiled where a binary matches
# their current source (runtime.accel); otherwise this changes nothing.
_accel.install()
