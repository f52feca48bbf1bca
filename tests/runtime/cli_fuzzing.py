"""A seeded generator of hostile command lines for `cortexc plan` and `cortex simulate|run`, and a
harness that runs them (issue 10: "no traceback from `cortexc plan` or `cortex simulate` on any input").

tests/planner/plan_fuzzing.py mutates the *language* files; this one attacks the command-line
surface around them: `cortexc plan --observed TRACE`, `--disaggregate`, `--verify-budget`,
`--inventory`, `--diff`, `-o`; `cortex simulate --trace FILE [--slo-scale] [--layout ...]
[--plan FILE]`, `--layout plan` on colocated and prefill/decode plans; `cortex run --record`.
Inputs are valid artefacts made once per harness (recorded traces from `cortex run --engine
simulated --record`, simulator traces, saved plans) with hostile edits: truncated or garbage
lines, non-UTF-8 bytes, negative/NaN/1e308 values, wrong types, missing fields, unknown stages,
models and devices, a trace of another workflow; files that are empty, directories, binary,
/dev/zero or missing (no FIFOs: opening one without a writer blocks in every Unix tool); and absurd flag values (rates 0/negative/inf/nan, runs 0 or 10^9, seeds out of range).
Added by the hostile-user pass (round 3), from a stream of their own (:func:`_round3`, about
:data:`ROUND3_CHANCE` of inputs; an earlier seed's other inputs are unchanged): traces whose calls'
parents form cycles, name themselves or an unknown call, or repeat an id; a 100 MB line; and
`cortex run` with a hostile calibration cache (``$CORTEX_PROFILE_CACHE``: profile files and the
drift history with NaN/Infinity/0/huge/negative values, wrong types, non-UTF-8 bytes), always as a
process (the profile lookups are process-wide state an in-process run would leave behind).

Input ``i`` of seed ``s`` is always the same command and the same file bytes (:func:`make_case`).
A failure is an exception escaping the command, an exit code other than 0, 1 or 2, a traceback in
the output, a non-zero exit without an ``error``/``Error`` line, more than :data:`HANG_S` CPU seconds,
or (in subprocess mode) a file written outside the input's temporary folder.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from cortexlang.cli import compiler_app, runtime_app
from tests.cortexlang.fuzzing import Harness as CompilerHarness
from tests.cortexlang.fuzzing import InputTimeout, time_limit

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
HANG_S = 30.0
"""CPU seconds per input (the fair bound on a machine other work shares); wall time is bounded at
:data:`WALL_FACTOR` times it, so a command blocked without using the CPU fails too."""
WALL_FACTOR = 4
RECORDED = Path(__file__).with_name("cli_fuzz_recorded_nl2sql.jsonl")
"""12 runs of examples/nl2sql.cortex at 2 runs/s, recorded by `cortex run --engine simulated --record`."""
PLANNED = ("nl2sql", "rag", "react_agent", "deep_research")
"""Examples whose plans are saved at set-up and fed back (``rag``'s with ``--disaggregate`` is P/D)."""
POLICIES = ("fcfs", "cortex", "hexagent", "autellix-plas", "hexgen-text2sql")
SURFACES = ("simulate-trace", "plan-observed", "plan-flags", "simulate-plan", "simulate-flags", "run-record")
WEIGHTS = (30, 25, 12, 15, 16, 2)
ALL_SURFACES = SURFACES + ("run-calibrated",)
"""Every surface a report counts: :data:`SURFACES` plus those :func:`_round3` draws from its own stream."""
ROUND3_CHANCE = 0.06
GIANT_LINE_BYTES = 100_000_000

# Hostile values. Strings are flag values; JSON values are spliced into traces and plans.
NUMBERS = ["0", "-1", "-0", "1e-300", "1e308", "1e999", "inf", "-inf", "nan", "NaN", "1", "3", "0.5",
           "99999999999999999999", "abc", "", " ", "1/s", "5/min", "-2/s", "0x10", "1_000"]
INTS = ["0", "-1", "1", "2", "40", "1000000000", "18446744073709551616", "-9999999999999999999", "abc", "1.5", ""]
JSON_VALUES: list[object] = [0, -1, -1e-9, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), 10**30,
                             0.5, True, None, "", "x", "ok", [], {}, ["c0"], {"a": 1}, "llama8b", "H100", "CPU"]
CLUSTERS = ["H100=1", "H100=2,A100=1", "mixed12", "h100x8", "H100=0", "H100=-1", "H100=99999999", "FOO=1", "",
            "=", "H100=1,H100=2", "h100=1", "CPU=4", "A100=1.5", "H100=1e3", ","]
FILE_KINDS = ("empty", "directory", "missing", "binary", "not-utf8", "huge-line", "dev-zero", "nul")


@dataclass
class Case:
    """One input: the app (``cortexc`` or ``cortex``), its arguments with ``{dir}`` for the input's
    folder, and the files to write there first (name -> bytes; ``None`` makes a directory)."""

    surface: str
    app: str
    args: list[str]
    files: dict[str, bytes | None] = field(default_factory=dict)
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables for the command (``{dir}`` replaced); a case with any runs as a process."""

    def argv(self, folder: Path) -> list[str]:
        return [a.replace("{dir}", str(folder)) for a in self.args]

    def environment(self, folder: Path) -> dict[str, str]:
        return {k: v.replace("{dir}", str(folder)) for k, v in self.env.items()}

    def command(self) -> str:
        """A reproducer line (the files are those :func:`make_case` writes)."""
        return " ".join([self.app] + [a if a and " " not in a else repr(a) for a in self.args])


@dataclass(frozen=True)
class Outcome:
    seconds: float
    exit_code: int | None
    failure: str | None
    cpu_seconds: float = 0.0
    """CPU time of the input: this process's (in process) plus its child's (as a process)."""


# --------------------------------------------------------------------------------------- mutation


def _dumps(obj: object) -> str:
    return json.dumps(obj, allow_nan=True)  # NaN/Infinity: what a careless recorder would write


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(rng: random.Random, obj: object, extra: list[object] = ()) -> object:
    """One hostile edit at a random place of ``obj``: a hostile value, a deleted key, an emptied list."""
    paths = _paths(obj)
    if not paths:
        return rng.choice(JSON_VALUES)
    path = rng.choice(paths)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    kind = rng.randrange(6)
    if kind == 0 and isinstance(parent, dict):
        del parent[last]
    elif kind == 1 and isinstance(parent[last], (list, dict)):
        parent[last] = type(parent[last])()
    elif kind == 2 and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
        parent[last] = rng.choice([-parent[last], parent[last] * 1e6, parent[last] * 1e-9, 0])
    else:
        parent[last] = rng.choice(JSON_VALUES + list(extra))
    return obj


def mutate_number(rng: random.Random, obj: object) -> object:
    """A numeric leaf of ``obj`` set to a hostile number that keeps the JSON's types (0, negative,
    tiny, huge): what passes a schema check and tests the semantics behind it."""
    leaves = []
    for path in _paths(obj):
        v = obj
        for key in path:
            v = v[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            leaves.append((path, v))
    if not leaves:
        return mutate_json(rng, obj)
    path, v = rng.choice(leaves)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    choices = [0, -1, 1, 2, 10**6, 10**9] if isinstance(v, int) else [0.0, -1.0, 1e-9, 1e9, 1e300, v * 100]
    parent[path[-1]] = rng.choice(choices)
    return obj


def mutate_lines(rng: random.Random, text: str, extra: list[object] = ()) -> bytes:
    """A JSONL file with one to three hostile edits (line-level or inside one line's JSON)."""
    lines = text.splitlines()
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(10)
        i = rng.randrange(len(lines)) if lines else 0
        if not lines or kind == 0:
            lines.insert(i, rng.choice(["{", "[]", "null", "42", '"x"', "{}", '{"calls": []}', "\t",
                                        '{"calls": [{}], "arrival_s": 0}']))
        elif kind == 1:
            del lines[i]
        elif kind == 2:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]  # truncated mid-line
        elif kind == 3:
            lines = lines * rng.choice([2, 50, 400])  # many runs (arrivals repeat)
        elif kind == 4:  # the runs of one line re-timed: all at once, negative, far apart, NaN
            t = rng.choice([0.0, -5.0, 1e308, float("nan"), 1e-300])
            lines = [_retime(line, t, rng) for line in lines]
        else:
            try:
                obj = json.loads(lines[i])
            except ValueError:
                continue
            lines[i] = _dumps(mutate_number(rng, obj) if rng.random() < 0.4 else mutate_json(rng, obj, extra))
    return ("\n".join(lines) + "\n").encode()


def _retime(line: str, t: float, rng: random.Random) -> str:
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    if isinstance(obj, dict):
        obj["arrival_s"] = t if t != 1e308 else rng.random() * 1e308
    return _dumps(obj)


def hostile_file(kind: str) -> bytes | None:
    """The bytes of a hostile file of ``kind`` (see :data:`FILE_KINDS`); None for a directory."""
    return {"empty": b"", "directory": None, "missing": b"", "binary": bytes(range(256)) * 4,
            "not-utf8": b'{"arrival_s": 0, "calls": []}\n\xff\xfe\xfd\n', "huge-line": b"[" * 200_000 + b"\n",
            "dev-zero": b"", "nul": b"\0" * 1000}[kind]


# --------------------------------------------------------------------------------------- cases


def make_case(seed: int, index: int, base: "Artefacts") -> Case:
    """Input ``index`` of run ``seed`` (deterministic given the harness's artefacts)."""
    rng = random.Random(f"cli:{seed}:{index}")
    surface = rng.choices(SURFACES, WEIGHTS)[0]
    case = {"simulate-trace": _simulate_trace, "plan-observed": _plan_observed, "plan-flags": _plan_flags,
            "simulate-plan": _simulate_plan, "simulate-flags": _simulate_flags, "run-record": _run_record}[surface](
        rng, base)
    if rng.random() < 0.12:  # one file argument replaced by a hostile file
        _hostile_file_argument(rng, case)
    return _round3(seed, index, case, base)


def _round3(seed: int, index: int, case: Case, base: "Artefacts") -> Case:
    """``case``, or for about :data:`ROUND3_CHANCE` of inputs one of round 3's mutations (module docstring),
    drawn from a stream of their own so that the other inputs of a seed stay what they were."""
    rng = random.Random(f"cli-r3:{seed}:{index}")
    if rng.random() >= ROUND3_CHANCE:
        return case
    kind = rng.choice(["calibrated", "calibrated", "cycles", "cycles", "giant-line"])
    if kind == "calibrated" or "trace.jsonl" not in case.files or case.files["trace.jsonl"] is None:
        return _run_calibrated(rng, base)
    trace = case.files["trace.jsonl"] or b""
    if kind == "cycles":
        case.files["trace.jsonl"] = _with_hostile_parents(rng, trace)
    else:  # one line of 100 MB: a string, or a number of 100 million digits
        filler = b'"' + b"a" * GIANT_LINE_BYTES + b'"' if rng.random() < 0.5 else b"1" + b"0" * GIANT_LINE_BYTES
        case.files["trace.jsonl"] = b'{"arrival_s": 0, "calls": [], "x": ' + filler + b"}\n" + trace
    case.note = (case.note + f"; trace has {kind}").lstrip("; ")
    return case


def _with_hostile_parents(rng: random.Random, trace: bytes) -> bytes:
    """``trace`` with the calls of some runs re-parented: a cycle, a call its own parent, an unknown
    parent, a repeated id (lines that do not parse stay as they are)."""
    out = []
    for raw in trace.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(raw)
            calls = [c for c in obj["calls"] if isinstance(c, dict)]
        except (ValueError, KeyError, TypeError):
            out.append(raw)
            continue
        if calls and rng.random() < 0.5:
            a, b = rng.choice(calls), rng.choice(calls)
            edit = rng.randrange(4)
            if edit == 0:  # a -> b -> a (or a -> a)
                a["parents"], b["parents"] = [b.get("id")], [a.get("id")]
            elif edit == 1:
                a["parents"] = [a.get("id")]
            elif edit == 2:
                a["parents"] = ["no-such-call"]
            else:
                b["id"] = a.get("id")
        out.append(_dumps(obj))
    return ("\n".join(out) + "\n").encode()


def _run_calibrated(rng: random.Random, base: "Artefacts") -> Case:
    """`cortex run` on simulated engines with a hostile calibration cache: the machine's profile file
    and drift history (runtime/profiles.py, runtime/drift.py), each mutated or replaced by a hostile file."""
    case = Case("run-calibrated", "cortex", [], env={"CORTEX_PROFILE_CACHE": "{dir}/cache",
                                                     "CORTEX_MACHINE_KEY": "fuzz-machine"})
    shipped = (REPO / "planner" / "profile_data" / "smollm2-135m__cpu__tp1.json").read_text()
    profile = json.loads(shipped)
    for _ in range(rng.choice([0, 1, 1, 2])):
        profile = mutate_number(rng, profile) if rng.random() < 0.6 else mutate_json(rng, profile, ["CPU", "cpu", -1])
    history = [_dumps({"at": f"2026-12-0{d}T08:00:00+00:00", "model": "smollm2-135m", "gpu": "CPU", "tp": 1,
                       **{k: profile.get(k, 1.0) for k in ("prefill_fixed_ms", "prefill_us_per_token",
                                                           "decode_fixed_ms", "decode_ms_per_seq",
                                                           "decode_ns_per_kv_token")}}) for d in (1, 2, 3)]
    files = {"cache/fuzz-machine/smollm2-135m__cpu__tp1.json": _dumps(profile).encode(),
             "cache/fuzz-machine/history.jsonl": mutate_lines(rng, "\n".join(history))}
    if rng.random() < 0.3:  # one of them a hostile file instead
        name = rng.choice(list(files))
        kind = rng.choice([k for k in FILE_KINDS if k not in ("missing", "dev-zero")])
        files[name] = hostile_file(kind)
        case.note = f"{name.rsplit('/', 1)[-1]} is {kind}"
    case.files.update(files)
    case.args = ["run", base.example("nl2sql"), "--engine", "simulated", "--input",
                 _file_arg(case, "in.jsonl", "\n".join(base.questions.splitlines()[:2]).encode()), "--limit", "1"]
    if rng.random() < 0.5:
        case.args.append("--no-plan")  # else the plan is made on the hostile profile, with its drift margin
    return case


def _file_arg(case: Case, name: str, data: bytes | None) -> str:
    case.files[name] = data
    return "{dir}/" + name


def _hostile_file_argument(rng: random.Random, case: Case) -> None:
    slots = [i for i, a in enumerate(case.args) if a.startswith("{dir}/") and a[6:] in case.files]
    if not slots:
        return
    i = rng.choice(slots)
    kind = rng.choice(FILE_KINDS)
    name = case.args[i].removeprefix("{dir}/")
    if kind == "missing":
        case.files.pop(name, None)
        case.args[i] = "{dir}/missing-" + name
    elif kind == "dev-zero":
        case.args[i] = "/dev/zero"
    else:
        case.files[name] = hostile_file(kind)
    case.note = (case.note + f"; {name} is {kind}").lstrip("; ")


HOSTILE_FLAG = 0.2
"""Chance that a flag gets a hostile value (several flags per input: most inputs still reach the work)."""


def _flag_value(rng: random.Random, sane: list[str], hostile: list[str] = NUMBERS) -> str:
    return rng.choice(hostile) if rng.random() < HOSTILE_FLAG else rng.choice(sane)


def _simulate_trace(rng: random.Random, base: "Artefacts") -> Case:
    text = rng.choice(base.sim_traces)
    data = mutate_lines(rng, text, ["nl2sql", "generate", "fix", "llama70b", "smollm2", "sql", "tool", "other"]) \
        if rng.random() < 0.8 else text.encode()
    case = Case("simulate-trace", "cortex", [])
    args = ["simulate", "--trace", _file_arg(case, "trace.jsonl", data), "--runs", _flag_value(rng, ["20", "50"], INTS)]
    for name in rng.sample(POLICIES, rng.choice([1, 1, 2])):
        args += ["--policy", name]
    if rng.random() < 0.6:
        args += ["--cluster", _flag_value(rng, ["H100=1", "H100=2,A100=1", "mixed12"], CLUSTERS)]
    layout = rng.choice(["auto", "shared", "isolated", "plan", "plan", None])
    if layout:
        args += ["--layout", layout]
    if layout == "plan" or rng.random() < 0.1:
        plan = base.plans["nl2sql_llama"] if rng.random() < 0.7 else rng.choice(list(base.plans.values()))
        args += ["--plan", _file_arg(case, "plan.json", plan)]
    if rng.random() < 0.5:
        args += ["--slo-scale", _flag_value(rng, ["2", "5", "1.5"])]
    if rng.random() < 0.2:
        args += ["--prefill", _flag_value(rng, ["H100=1", "A100=1"], CLUSTERS)]
    if rng.random() < 0.2:
        args += ["--seed", _flag_value(rng, ["0", "7"], INTS)]
    if rng.random() < 0.3:
        args.append("--json")
    case.args = args
    return case


def _plan_observed(rng: random.Random, base: "Artefacts") -> Case:
    example, text = rng.choice(list(base.recorded.items()))
    if rng.random() < 0.15:  # a trace of another workflow
        example = rng.choice([e for e in PLANNED if e != example])
    data = mutate_lines(rng, text, ["generate", "fix", "execute", "unknown_stage", "length", "stop", "error",
                                    "empty", "rag", "c0", "c1"]) if rng.random() < 0.85 else text.encode()
    case = Case("plan-observed", "cortexc", [])
    args = ["plan", base.example(example), "--observed", _file_arg(case, "trace.jsonl", data)]
    args += ["--no-verify"] if rng.random() < 0.8 else ["--verify-budget", "0.2"]
    if rng.random() < 0.2:
        args.append("--json")
    if rng.random() < 0.15:
        args += ["--rate", _flag_value(rng, ["1/s", "0.05"])]
    case.args = args
    return case


def _plan_flags(rng: random.Random, base: "Artefacts") -> Case:
    example = rng.choice(PLANNED)
    case = Case("plan-flags", "cortexc", ["plan", base.example(example)])
    args = case.args
    args += ["--no-verify"] if rng.random() < 0.7 else ["--verify-budget", _flag_value(rng, ["0.1", "0.2"])]
    options = [
        lambda: ["--rate", _flag_value(rng, ["1/s", "20/min", "0.05"])],
        lambda: ["--seed", rng.choice(INTS)],
        lambda: ["--mode", rng.choice(["cost", "headroom", "speed", ""])],
        lambda: ["--disaggregate"],
        lambda: ["--json"],
        lambda: ["--detailed-exitcode"],
        lambda: ["-o", rng.choice([_file_arg(case, "out.json", b"old"), "{dir}/no/such/dir/out.json",
                                   "{dir}", "/dev/full"])],
        lambda: ["--diff", _file_arg(case, "old.json", _mutated_plan(rng, base))],
        lambda: ["--inventory", _file_arg(case, "inv.json", _mutated_inventory(rng))],
    ]
    for option in rng.sample(options, rng.choice([1, 2, 3])):
        args += option()
    return case


def _simulate_plan(rng: random.Random, base: "Artefacts") -> Case:
    example = rng.choice(PLANNED)
    key = "rag_pd" if example == "rag" and rng.random() < 0.5 else example
    if rng.random() < 0.1:  # a plan of another file
        key = rng.choice(list(base.plans))
    case = Case("simulate-plan", "cortex", [])
    plan = _mutated_plan(rng, base, key) if rng.random() < 0.75 else base.plans[key]
    case.args = ["simulate", base.example(example), "--layout", "plan", "--plan", _file_arg(case, "plan.json", plan),
                 "--runs", _flag_value(rng, ["20", "40"], INTS), "--policy", rng.choice(POLICIES)]
    if rng.random() < 0.3:
        case.args += ["--slo-scale", _flag_value(rng, ["2", "4"])]
    return case


def _simulate_flags(rng: random.Random, base: "Artefacts") -> Case:
    example = rng.choice(PLANNED)
    case = Case("simulate-flags", "cortex", ["simulate", base.example(example), "--policy", rng.choice(POLICIES)])
    case.args += ["--runs", _flag_value(rng, ["20", "40"], INTS)]
    options = [
        lambda: ["--rate", _flag_value(rng, ["0.5", "2"])],
        lambda: ["--seed", rng.choice(INTS)],
        lambda: ["--slo-scale", _flag_value(rng, ["2", "3"])],
        lambda: ["--cluster", rng.choice(CLUSTERS)],
        lambda: ["--prefill", rng.choice(CLUSTERS)],
        lambda: ["--layout", rng.choice(["auto", "shared", "isolated", "plan", "bogus", ""])],
        lambda: ["--workflow", rng.choice([example, "nope", "", "nl2sql"])],
        lambda: ["--json"],
    ]
    for option in rng.sample(options, rng.choice([1, 2, 3])):
        case.args += option()
    return case


def _run_record(rng: random.Random, base: "Artefacts") -> Case:
    case = Case("run-record", "cortex", [])
    inputs = base.questions.splitlines()[:3]
    data = "\n".join(inputs).encode() if rng.random() < 0.7 else mutate_lines(rng, "\n".join(inputs))
    record = rng.choice(["{dir}/rec.jsonl", "{dir}", "{dir}/no/such/dir/rec.jsonl", "/dev/full",
                         _file_arg(case, "existing.jsonl", b"x\n")])
    case.args = ["run", base.example("nl2sql"), "--engine", "simulated", "--input",
                 _file_arg(case, "in.jsonl", data), "--record", record, "--limit", _flag_value(rng, ["1", "2"], INTS),
                 "--no-plan"]
    if rng.random() < 0.3:
        case.args += ["--rate", _flag_value(rng, ["50"])]
    return case


def _mutated_plan(rng: random.Random, base: Artefacts, key: str | None = None) -> bytes:
    obj = json.loads(base.plans[key or rng.choice(list(base.plans))])
    for _ in range(rng.choice([1, 1, 2])):
        obj = (mutate_number(rng, obj) if rng.random() < 0.5 else
               mutate_json(rng, obj, ["H100", "TPU9", "llama70b", "nope", "generate", -3, 0]))
    return (_dumps(obj) + "\n").encode() if rng.random() < 0.9 else _dumps(obj)[: rng.randrange(200)].encode()


def _mutated_inventory(rng: random.Random) -> bytes:
    inv = {"gpus": [{"kind": "H100", "count": 2, "cost_per_hour": 3.0}, {"kind": "A100", "count": 1,
                                                                          "cost_per_hour": 1.5}],
           "cpu": {"slots": 8, "cost_per_hour": 0.04}}
    inv = mutate_number(rng, inv) if rng.random() < 0.5 else mutate_json(rng, inv, ["TPU9", "H200", -2])
    return _dumps(inv).encode()


# --------------------------------------------------------------------------------------- harness


@dataclass
class Artefacts:
    """Valid inputs made once per harness: the examples (with the sales database built), traces
    recorded by `cortex run --engine simulated --record`, simulator traces, saved plans."""

    folder: Path
    recorded: dict[str, str]
    sim_traces: list[str]
    plans: dict[str, bytes]
    questions: str

    def example(self, name: str) -> str:
        return str(self.folder / f"{name}.cortex")


def make_artefacts(workdir: Path) -> Artefacts:
    """Copy the examples, build their database, record a trace and save plans (about a minute)."""
    folder = workdir / "examples"
    shutil.copytree(EXAMPLES, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, str(EXAMPLES / "data" / "build_sales_db.py"), str(folder / "data" / "sales.db")],
                   check=True, capture_output=True)
    runner = CliRunner()
    questions = (EXAMPLES / "questions" / "nl2sql.jsonl").read_text()
    # The base trace is a committed recording (so input i is the same bytes on every run); recording
    # afresh here checks that `cortex run --record` still works before its hostile variants run.
    rec = workdir / "recorded-nl2sql.jsonl"
    result = runner.invoke(runtime_app, ["run", str(folder / "nl2sql.cortex"), "--engine", "simulated", "--input",
                                         str(EXAMPLES / "questions" / "nl2sql.jsonl"), "--record", str(rec),
                                         "--limit", "2"])
    if result.exit_code != 0 or len(rec.read_text().splitlines()) != 2:
        raise RuntimeError(f"cannot record a trace: {result.output[-2000:]}")
    recorded = {"nl2sql": RECORDED.read_text()}
    plans = {}
    for name in PLANNED:
        out = workdir / f"plan-{name}.json"
        r = runner.invoke(compiler_app, ["plan", str(folder / f"{name}.cortex"), "--no-verify", "-o", str(out)])
        if r.exit_code == 0:
            plans[name] = out.read_bytes()
    out = workdir / "plan-rag-pd.json"
    if runner.invoke(compiler_app, ["plan", str(folder / "rag.cortex"), "--no-verify", "--disaggregate",
                                    "-o", str(out)]).exit_code == 0:
        plans["rag_pd"] = out.read_bytes()
    sim_traces = [_llama_trace(recorded["nl2sql"]), _sim_trace()]
    # A plan of the trace's nl2sql stages on GPUs, for `--trace --layout plan`.
    plans["nl2sql_llama"] = _llama_plan()
    return Artefacts(folder, recorded, sim_traces, plans, questions)


def _llama_trace(recorded: str) -> str:
    """The recorded trace with its model named ``llama8b`` (a model `cortex simulate --trace` knows)."""
    out = []
    for line in recorded.splitlines():
        obj = json.loads(line)
        for c in obj["calls"]:
            if c.get("kind") == "llm":
                c["model"] = "llama8b"
        out.append(json.dumps(obj))
    return "\n".join(out) + "\n"


def _sim_trace() -> str:
    """A simulated NL2SQL trace (benchmarks/trace_remaining_path.py's recorder), 30 runs."""
    sys.path.insert(0, str(REPO))
    from benchmarks.trace_remaining_path import record_trace
    from runtime.simulator.trace import dump_trace

    return dump_trace(record_trace(30, 0))


def _llama_plan() -> bytes:
    """A saved plan of the synthetic NL2SQL workflow on llama8b (the stages of the simulator traces)."""
    from planner.api import plan_program
    from planner.synthetic import nl2sql_program

    return plan_program(nl2sql_program()).canonical_json().encode()


class Harness:
    """Runs cases in process (Typer's runner, fast) or as real subprocesses (``subprocess=True``:
    exit codes, stderr and written files exactly as a user sees them)."""

    def __init__(self, workdir: Path, artefacts: Artefacts | None = None) -> None:
        self.workdir = workdir
        self.base = artefacts or make_artefacts(workdir)
        self.runner = CliRunner()
        self.count = 0

    def _prepare(self, case: Case) -> Path:
        self.count += 1
        folder = self.workdir / f"in{self.count}"
        folder.mkdir()
        for name, data in case.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                path.mkdir()
            else:
                path.write_bytes(data)
        return folder

    def run(self, case: Case, subprocess_mode: bool = False, hang_s: float = HANG_S) -> Outcome:
        folder = self._prepare(case)
        argv = case.argv(folder)
        before = _snapshot(self.workdir, folder)
        start, cpu_start = time.perf_counter(), _cpu()
        try:
            if subprocess_mode or case.env:
                code, output, failure = _run_subprocess(case.app, argv, folder, hang_s, case.environment(folder))
            else:
                code, output, failure = self._run_inprocess(case.app, argv, hang_s)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu_start
        if failure is None:
            failure = _verdict(code, output, "--detailed-exitcode" in argv)
        if failure is None:
            written = _snapshot(self.workdir, folder) - before
            if written:
                failure = f"wrote outside its folder: {sorted(written)[:3]}"
        return Outcome(seconds, code, failure, cpu)

    def _run_inprocess(self, app: str, argv: list[str], hang_s: float) -> tuple[int | None, str, str | None]:
        try:
            with time_limit(WALL_FACTOR * hang_s, cpu_seconds=hang_s):
                result = self.runner.invoke(compiler_app if app == "cortexc" else runtime_app, argv)
        except InputTimeout as timeout:
            return None, "", str(timeout)
        return result.exit_code, result.output, CompilerHarness._failure(result)


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _run_subprocess(app: str, argv: list[str], folder: Path, hang_s: float,
                    extra_env: dict[str, str] | None = None) -> tuple[int | None, str, str | None]:
    exe = Path(sys.executable).parent / app
    env = dict(os.environ, HOME=str(folder), XDG_CACHE_HOME=str(folder / ".cache"), COLUMNS="120", **(extra_env or {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run([str(exe)] + argv, cwd=folder, env=env, capture_output=True,
                              timeout=WALL_FACTOR * hang_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"over {WALL_FACTOR * hang_s:g} s of wall time"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, output, (f"over {hang_s:g} s of CPU ({cpu:.1f} s)" if cpu > hang_s else None)


def _verdict(code: int | None, output: str, detailed: bool = False) -> str | None:
    """A failure seen in the output: a traceback, an odd exit code, an unexplained non-zero exit
    (``detailed``: `cortexc plan --detailed-exitcode`, whose exit 2 means "changes present")."""
    if "Traceback" in output:
        last = [line for line in output.splitlines() if line.strip()][-1:]
        return f"a traceback in the output: {last[0][:160] if last else ''}"
    if code not in (0, 1, 2):
        return f"exit code {code}"
    explained = ("error", "Error", "No plan: ", "no feasible", '"binding"')  # the last: Infeasible as --json
    if code and not (detailed and code == 2) and not any(w in output for w in explained):
        return f"exit {code} without an error message: {output.strip()[-160:]!r}"
    return None


def _snapshot(workdir: Path, folder: Path) -> set[str]:
    """Names of the entries a command may not add or remove: the repository's top level (but for
    dot-files: tools' caches such as .import_linter_cache, written by other work on the checkout) and
    examples, and the harness's folder (the current directory while fuzzing) but for inputs' folders."""
    out = set()
    for root in (REPO, REPO / "examples", workdir):
        out.update(e.path for e in os.scandir(root) if not ((root == workdir and e.name.startswith("in"))
                                                             or (root == REPO and e.name.startswith("."))))
    return out
