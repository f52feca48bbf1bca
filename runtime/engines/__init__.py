"""LLM engines behind one asynchronous interface (:mod:`runtime.engines.base`).

Backends import heavy dependencies (vLLM, httpx) lazily, so importing this
package is cheap; use :func:`runtime.engines.factory.make_engine` to build one.
"""

from runtime.engines.base import (
    ChatMessage,
    Engine,
    EngineError,
    EngineHealth,
    EngineMetrics,
    EngineNotRunning,
    EngineSpec,
    GenerationRequest,
    GenerationResult,
    GenerationTiming,
    RequestRejected,
    TokenDelta,
    TokenSink,
    check_context,
    estimate_min_tokens,
    streaming_to,
    token_sink,
)

__all__ = [
    "ChatMessage",
    "Engine",
    "EngineError",
    "EngineHealth",
    "EngineMetrics",
    "EngineNotRunning",
    "EngineSpec",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTiming",
    "RequestRejected",
    "TokenDelta",
    "TokenSink",
    "check_context",
    "estimate_min_tokens",
    "streaming_to",
    "token_sink",
]
