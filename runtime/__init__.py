"""The Cortex runtime: engines, SQL executors, the workflow-aware orchestrator and the simulator."""
