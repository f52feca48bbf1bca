"""Cortex example material: workflows, data generators, prompts and tools (see README.md)."""
