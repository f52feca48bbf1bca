"""The Cortex planner: sizes a dedicated pool per stage from the IR, profiles and load."""
