"""The inspectable build directory: render a :class:`RuntimeSpec` with jinja2, and load it back.

Layout of ``out_dir``::

    runtime.json              the spec (what load_build reads; everything else is a view of it)
    program.json              the compiled IR
    plan.json                 the plan, when the build was planned
    README.md                 pools, engines, executors, knobs, orchestrator (rendered)
    orchestrator.json         policy, admission limits, cache, per-pool queues and slots
    engines/<replica>.json    vLLM engine arguments (the exact keyword arguments the engine gets)
    engines/<replica>.sh      an equivalent `vllm serve` command with its environment
    sql/<database>.json       SQL executor pool settings

Rendering is deterministic (sorted keys, no timestamps), so two builds of the
same inputs diff cleanly. Files from an earlier build that the new one does
not produce are removed from ``engines/`` and ``sql/``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError

from runtime.build.layout import BuildError
from runtime.build.spec import SPEC_VERSION, RuntimeSpec
from runtime.engines.vllm_inproc import engine_kwargs_for
from runtime.engines.vllm_server import server_argv

TEMPLATES = Path(__file__).with_name("templates")
SPEC_FILE = "runtime.json"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                      autoescape=False)
    env.filters["shquote"] = shlex.quote
    return env


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2, default=str) + "\n"


def _server_flags(engine: Any, on_cpu: bool) -> list[str]:
    """``vllm serve`` flags for an engine spec, without interpreter, host, port and model."""
    argv = server_argv(engine.model_copy(update={"model": "MODEL"}), on_cpu=on_cpu, host="HOST", port=0)
    flags = argv[argv.index("--port") + 2:]
    out, i = [], 0
    while i < len(flags):
        if flags[i] == "--model":
            i += 2
            continue
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out.append(f"{flags[i]} {shlex.quote(flags[i + 1])}")
            i += 2
        else:
            out.append(flags[i])
            i += 1
    return out


def write_build(spec: RuntimeSpec, out_dir: Path) -> list[Path]:
    """Render ``spec`` into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    env = _env()
    written: list[Path] = []

    def put(rel: str, text: str) -> None:
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    put(SPEC_FILE, spec.canonical_json())
    put("program.json", spec.program.canonical_json())
    if spec.plan is not None:
        put("plan.json", spec.plan.canonical_json())
    elif (out_dir / "plan.json").exists():
        (out_dir / "plan.json").unlink()
    for pool in spec.llm_pools:
        weights = spec.program.model(pool.model).weights
        for rep in (*pool.prefill_replicas, *pool.replicas):  # a P/D pool's prefill engines are engines too
            on_cpu = rep.device == "CPU"
            args = engine_kwargs_for(rep.engine, on_cpu)
            args["model"] = weights
            put(f"engines/{rep.replica_id}.json", _json({
                "pool": pool.name, "stages": list(pool.stages), "model": pool.model, "device": rep.device,
                "tp": rep.tp, "kv_capacity_tokens": rep.kv_capacity_tokens, "profile": rep.profile,
                "environment": {"VLLM_CPU_OMP_THREADS_BIND": rep.engine.cpu_threads_bind} if on_cpu else {},
                "vllm_engine_args": args,
            }))
            script = env.get_template("engine.sh.j2").render(pool=pool, rep=rep, weights=weights,
                                                             flags=_server_flags(rep.engine, on_cpu))
            put(f"engines/{rep.replica_id}.sh", script)
            (out_dir / f"engines/{rep.replica_id}.sh").chmod(0o755)
    for db in spec.databases:
        users = [e.stage for e in spec.executor_pools if e.database == db.name]
        put(f"sql/{db.name}.json", _json({**db.model_dump(mode="json"), "access": "read_only", "stages": users}))
    put("orchestrator.json", _json({
        **spec.orchestrator.model_dump(mode="json"),
        "pools": {p.name: {"kind": "llm", "stages": list(p.stages), "replicas": len(p.replicas),
                           "slots": sum(r.engine.max_num_seqs or 0 for r in p.replicas), "max_queue": p.max_queue}
                  | ({"prefill_replicas": len(p.prefill_replicas)} if p.prefill_replicas else {})
                  for p in spec.llm_pools}
        | {e.name: {"kind": e.kind, "stages": [e.stage], "slots": e.slots, "max_queue": e.max_queue}
           for e in spec.executor_pools},
    }))
    knobs = spec.knobs.model_dump()
    put("README.md", env.get_template("README.md.j2").render(spec=spec, knobs=knobs, out_dir_name=out_dir.name))
    keep = set(written)
    for sub in ("engines", "sql"):
        for stale in (out_dir / sub).glob("*") if (out_dir / sub).is_dir() else ():
            if stale not in keep:
                stale.unlink()
    return written


def load_build(path: Path) -> RuntimeSpec:
    """The spec of a build directory (or of a ``runtime.json`` file); BuildError with the reason otherwise."""
    path = Path(path)
    file = path / SPEC_FILE if path.is_dir() else path
    if not file.is_file():
        raise BuildError(f"{path} is not a Cortex build: no {SPEC_FILE} (make one with `cortexc build FILE -o DIR`)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BuildError(f"cannot read {file}: {exc}") from None
    if raw.get("spec_version") != SPEC_VERSION:
        raise BuildError(f"{file} has spec version {raw.get('spec_version')!r}; this runtime reads {SPEC_VERSION!r}: "
                         "rebuild it with `cortexc build`")
    try:
        return RuntimeSpec.model_validate(raw)
    except ValidationError as exc:
        raise BuildError(f"{file} is not a valid runtime spec ({exc.error_count()} errors): {exc.errors()[0]['msg']} "
                         f"at {'.'.join(map(str, exc.errors()[0]['loc']))}") from None
