"""Serving: the HTTP API over an orchestrator (``cortex serve``, ``cortex dev``)."""

from runtime.serve.app import create_app
from runtime.serve.server import check_binding, serve, server_config

__all__ = ["create_app", "serve", "check_binding", "server_config"]
