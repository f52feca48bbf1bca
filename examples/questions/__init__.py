"""The NL2SQL question set and its evaluation script."""
