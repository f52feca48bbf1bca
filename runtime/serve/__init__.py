"""Serving: the HTTP API over an orchestrator (``cortex serve``, ``cortex dev``)."""

from runtime.serve.app import check_binding, create_app, serve

__all__ = ["create_app", "serve", "check_binding"]
