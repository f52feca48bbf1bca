"""Deterministic generators of the example data: the sales database and the retrieval corpus."""
