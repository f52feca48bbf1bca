"""Tools the example workflows call: ``tool(ctx: dict) -> dict``, no network."""
