"""A client engine for any OpenAI-compatible endpoint (label ``openai-remote``).

Requests are streamed (``stream: true``) so TTFT is measured at the first
content chunk; token counts come from the final ``usage`` chunk
(``stream_options.include_usage``). Chat prompts use ``/v1/chat/completions``,
text prompts ``/v1/completions``.

Abort: the OpenAI API has no abort call; closing the stream is the abort (vLLM
aborts a request whose client disconnected). :meth:`OpenAIRemoteEngine.abort`
cancels the request's streaming task, which closes the connection, and the
pending ``generate`` returns the text so far with ``finish_reason="abort"``.

Metrics: when the server exposes Prometheus text at ``/metrics`` (vLLM does),
a background task scrapes it every ``metrics_interval_s``; otherwise the
snapshot holds locally counted running requests and tokens only.

Failures are classified: an answer of HTTP 400, 413 or 422 means the endpoint
refused *this request* (too long for the context, a parameter it does not
accept) and raises :class:`~runtime.engines.base.RequestRejected`; anything
else (5xx, 401/403/404, 429, a broken connection) is the endpoint failing
(:class:`~runtime.engines.base.EngineError`). With ``max_context`` known, a
request whose prompt (estimated from below, :func:`estimate_min_tokens`) plus
``max_tokens`` cannot fit is refused before it is sent.

Streaming: every content piece is handed to the request's token sink as it
arrives. ``seed``, ``response_format``, ``tools``/``tool_choice`` and
``logprobs`` are passed through as the OpenAI API defines them; an endpoint that
cannot honour one answers 400, which is a :class:`RequestRejected` like any
other. A stage's output constraint goes as vLLM's ``structured_outputs`` body
field (JSON schema, regex or grammar) with ``vllm_extensions``, else only a JSON
schema can go, as a strict ``json_schema`` response_format (regex and grammar
constraints are then refused when the engine is set up). Streamed tool-call pieces are joined per index into whole calls.

``priority`` and ``request_id`` are sent in the body only when
``vllm_extensions`` is set (vLLM accepts them; other servers may reject
unknown fields).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from runtime.engines.base import (
    Engine,
    EngineError,
    EngineHealth,
    EngineLabel,
    EngineMetrics,
    EngineNotRunning,
    GenerationRequest,
    GenerationResult,
    GenerationTiming,
    RequestRejected,
    TokenDelta,
    TokenSink,
    check_context,
    estimate_min_tokens,
    token_sink,
)

PROMETHEUS_NAMES = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "preemptions": ("vllm:num_preemptions_total",),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "finished": ("vllm:request_success_total",),
}
"""Our metric -> vLLM Prometheus names (older vLLM versions used the ``gpu_`` forms)."""

REJECTED_STATUSES = frozenset({400, 413, 422})
"""HTTP answers that blame the request, not the endpoint (see module docstring)."""


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum every sample of each metric over its label sets (``name{labels} value`` lines)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name_part, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        value_text = rest.rsplit("}", 1)[-1].split() if "{" in line else rest.split()
        if not value_text:
            continue
        try:
            value = float(value_text[0])
        except ValueError:
            continue
        totals[name_part.strip()] = totals.get(name_part.strip(), 0.0) + value
    return totals


def metrics_from_prometheus(label: EngineLabel, samples: dict[str, float]) -> EngineMetrics:
    def pick(key: str) -> float:
        return next((samples[n] for n in PROMETHEUS_NAMES[key] if n in samples), 0.0)

    queries = pick("prefix_queries")
    return EngineMetrics(
        label=label,
        kv_cache_usage=min(max(pick("kv_cache_usage"), 0.0), 1.0),
        running=int(pick("running")),
        waiting=int(pick("waiting")),
        prefix_cache_hit_rate=(pick("prefix_hits") / queries) if queries else None,
        preemptions=int(pick("preemptions")),
        prompt_tokens_total=int(pick("prompt_tokens")),
        generation_tokens_total=int(pick("generation_tokens")),
        requests_finished=int(pick("finished")),
    )


async def _head(response: httpx.Response, limit: int) -> str:
    """The first ``limit`` bytes of an error body as text (a hostile endpoint's body is not read whole)."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode(errors="replace")


REQUEST_FEATURES = frozenset({"stream", "seed", "response_format", "tools", "logprobs", "constraint:json"})
"""What the OpenAI API lets a client ask of any compatible endpoint (see module docstring); a JSON
constraint is sent as a strict ``json_schema`` response_format."""

VLLM_CONSTRAINTS = frozenset({"constraint:regex", "constraint:grammar"})
"""Constraints only vLLM's server takes (its ``structured_outputs`` body field): with ``vllm_extensions``."""


@dataclass
class _StreamState:
    started: float
    request_id: str = ""
    sink: TokenSink | None = None
    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    first_token_at: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    """vLLM's per-request timings (``--enable-per-request-metrics``), on the final usage chunk."""
    aborted: bool = False


class OpenAIRemoteEngine(Engine):
    """A streaming client for one model on an OpenAI-compatible server."""

    label: EngineLabel = "openai-remote"  # type: ignore[misc]
    capabilities = frozenset({"abort"}) | REQUEST_FEATURES

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        vllm_extensions: bool = False,
        request_timeout_s: float = 600.0,
        metrics_interval_s: float = 1.0,
        max_context: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.api_key = api_key
        self.vllm_extensions = vllm_extensions
        if vllm_extensions:  # per instance: only a vLLM server takes regex and grammar constraints
            self.capabilities = type(self).capabilities | VLLM_CONSTRAINTS  # type: ignore[misc]
        self.request_timeout_s = request_timeout_s
        self.metrics_interval_s = metrics_interval_s
        self.max_context = max_context
        """The model's context in tokens (prompt + output); None: left to the endpoint."""
        self._client: httpx.AsyncClient | None = None
        self._tasks: dict[str, tuple[asyncio.Task[None], _StreamState]] = {}
        self._scraper: asyncio.Task[None] | None = None
        self._remote_metrics: EngineMetrics | None = None
        self._local = {"prompt": 0, "generation": 0, "finished": 0}
        self._detail = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(self.request_timeout_s, connect=10.0),
        )
        health = await self.health()
        if not health.ok:
            await self.stop()
            raise EngineError(f"{self.base_url} is not serving: {health.detail}")
        if await self._scrape_once():
            self._scraper = asyncio.create_task(self._scrape_loop(), name=f"metrics:{self.base_url}")

    async def stop(self) -> None:
        if self._scraper is not None:
            self._scraper.cancel()
            await asyncio.gather(self._scraper, return_exceptions=True)
            self._scraper = None
        for rid in list(self._tasks):
            await self.abort(rid)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> EngineHealth:
        if self._client is None:
            return EngineHealth(state="stopped")
        for path in ("/health", "/v1/models"):
            try:
                response = await self._client.get(path, timeout=5.0)
            except httpx.HTTPError as exc:
                return EngineHealth(state="failed", detail=f"{type(exc).__name__}: {exc}")
            if response.status_code == 200:
                return EngineHealth(state="ready", detail=f"{self.base_url}{path} OK")
        return EngineHealth(state="failed", detail=f"{self.base_url}: HTTP {response.status_code}")

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> EngineMetrics:
        if self._remote_metrics is not None:
            return self._remote_metrics
        return EngineMetrics(
            label=self.label, running=len(self._tasks),
            prompt_tokens_total=self._local["prompt"], generation_tokens_total=self._local["generation"],
            requests_finished=self._local["finished"],
        )

    async def _scrape_once(self) -> bool:
        if self._client is None:
            return False
        try:
            response = await self._client.get("/metrics", timeout=5.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        self._remote_metrics = metrics_from_prometheus(self.label, parse_prometheus(response.text))
        return True

    async def refresh_metrics(self) -> EngineMetrics:
        """Scrape now (instead of waiting for the background poll) and return the snapshot."""
        await self._scrape_once()
        return self.metrics()

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval_s)
            await self._scrape_once()

    # ------------------------------------------------------------------ requests
    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.constraint is not None:  # with a response_format too: refused by check_request
            if self.vllm_extensions:
                body["structured_outputs"] = request.constraint.vllm_fields()
            else:  # checked by check_request: only a JSON schema reaches here
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "output", "schema": json.loads(request.constraint.spec), "strict": True}}
        elif request.response_format is not None:
            body["response_format"] = request.response_format
        if request.tools:
            body["tools"] = list(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if self.vllm_extensions:
            body["priority"] = request.priority
            body["request_id"] = request.request_id
        if isinstance(request.prompt, str):
            body["prompt"] = request.prompt
            if request.logprobs is not None:
                body["logprobs"] = request.logprobs
            return "/v1/completions", body
        body["messages"] = [m.model_dump() for m in request.prompt]
        if request.logprobs is not None:
            body.update(logprobs=True, top_logprobs=request.logprobs)
        return "/v1/chat/completions", body

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if self._client is None:
            raise EngineNotRunning(f"{self.label} client for {self.base_url} is not started")
        rid = request.request_id
        if rid in self._tasks:
            raise EngineError(f"request id {rid!r} is already in flight")
        prompt = request.prompt if isinstance(request.prompt, str) else "".join(m.content for m in request.prompt)
        check_context(estimate_min_tokens(prompt), request.max_tokens, self.max_context, estimated=True)
        self.check_request(request)
        state = _StreamState(started=time.monotonic(), request_id=rid, sink=token_sink())
        task = asyncio.create_task(self._stream(request, state), name=f"stream:{rid}")
        self._tasks[rid] = (task, state)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not state.aborted or (current is not None and current.cancelling()):
                task.cancel()
                raise
        finally:
            self._tasks.pop(rid, None)
        return self._result(request, state)

    async def abort(self, request_id: str) -> bool:
        entry = self._tasks.get(request_id)
        if entry is None or entry[0].done():
            return False
        task, state = entry
        state.aborted = True
        task.cancel()  # closes the HTTP stream; the server aborts the request
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def _stream(self, request: GenerationRequest, state: _StreamState) -> None:
        assert self._client is not None
        path, body = self._body(request)
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    detail = await _head(response, 500)
                    if response.status_code in REJECTED_STATUSES:
                        raise RequestRejected(f"the engine refused the request (HTTP {response.status_code}): {detail}")
                    raise EngineError(f"{self.base_url}{path}: HTTP {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            break
                        self._consume(json.loads(payload), state)
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _consume(chunk: dict[str, Any], state: _StreamState) -> None:
        if chunk.get("usage"):
            state.usage = chunk["usage"]
        if isinstance(chunk.get("metrics"), dict):
            state.metrics = chunk["metrics"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            piece = choice.get("text")
            if piece is None:
                piece = delta.get("content")
            entries = _logprob_entries(choice.get("logprobs"))
            state.logprobs.extend(entries)
            if piece:
                state.text.append(piece)
                state.chunks += 1
                if state.first_token_at is None:
                    state.first_token_at = time.monotonic()
                if state.sink is not None:
                    state.sink(TokenDelta(request_id=state.request_id, text=piece,
                                          logprobs=tuple(entries) if entries else None))
            for call in delta.get("tool_calls") or ():
                _merge_tool_call(state.tool_calls, call)
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]

    def _result(self, request: GenerationRequest, state: _StreamState) -> GenerationResult:
        usage = state.usage or {}
        reason = "abort" if state.aborted else ("length" if state.finish_reason == "length" else "stop")
        output_tokens = int(usage.get("completion_tokens", state.chunks))
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        details = usage.get("prompt_tokens_details") or {}
        self._local["prompt"] += prompt_tokens
        self._local["generation"] += output_tokens
        self._local["finished"] += 1
        return GenerationResult(
            request_id=request.request_id,
            text="".join(state.text),
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            finish_reason=reason,  # type: ignore[arg-type]
            timing=GenerationTiming(
                ttft_s=None if state.first_token_at is None else state.first_token_at - state.started,
                total_s=time.monotonic() - state.started,
                queue_s=_ms(state.metrics, "queue_time_ms"),
                prefill_s=_ms(state.metrics, "time_to_first_token_ms"),
                decode_s=_ms(state.metrics, "generation_time_ms"),
            ),
            engine=self.label,
            cached_prompt_tokens=details.get("cached_tokens"),
            tool_calls=tuple(state.tool_calls[i] for i in sorted(state.tool_calls)) or None,
            logprobs=tuple(state.logprobs) if request.logprobs is not None else None,
            constraint="enforced" if request.constraint is not None else None,
        )


def _ms(metrics: dict[str, Any] | None, key: str) -> float | None:
    """Seconds from one of vLLM's per-request ``*_ms`` timings (None when absent or not a number)."""
    value = (metrics or {}).get(key)
    return value / 1000.0 if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _merge_tool_call(calls: dict[int, dict[str, Any]], piece: dict[str, Any]) -> None:
    """Add one streamed tool-call piece (OpenAI sends the id and name once, the arguments in parts)."""
    call = calls.setdefault(int(piece.get("index", len(calls))),
                            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    if piece.get("id"):
        call["id"] = piece["id"]
    function = piece.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


def _logprob_entries(logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A chunk's logprobs as OpenAI chat entries (chat chunks carry them; legacy completions are converted)."""
    if not logprobs:
        return []
    if "content" in logprobs:
        return list(logprobs["content"] or ())
    tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [{"token": t, "logprob": v, "bytes": list(t.encode()),
             "top_logprobs": [{"token": k, "logprob": p, "bytes": list(k.encode())} for k, p in (top or {}).items()]}
            for t, v, top in zip(tokens, values, tops)]
