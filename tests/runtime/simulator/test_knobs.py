"""A simulation applies the plan's knobs: retry depth, model variant and max_tokens (simulated)."""

from __future__ import annotations

from collections import Counter

from typer.testing import CliRunner

from cortexlang.cli import runtime_app
from planner.plan import KnobSettings
from runtime.policies.fcfs import FCFS
from runtime.simulator.cluster import ReplicaSpec, shared_layout
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import nl2sql, program


def _calls(knobs: KnobSettings | None, models: tuple[str, ...] | None = None) -> list[tuple]:
    wf = nl2sql(retry_p=1.0, max_repairs=3, sql_models=models)
    layout = shared_layout({"H100": 2}, "llama8b", workflow=wf) + (
        ReplicaSpec(name="big", kind="llm", device="H100", model="llama70b", tp=4),)
    sim = Simulator(program(wf), layout, FCFS(), [Stream(wf.name, 2.0)],
                    SimConfig(runs=40, warmup_fraction=0.0, record_calls=True),
                    knobs={wf.name: knobs} if knobs else None)
    sim.run()
    return sim.call_records


def test_retry_depth_knob_bounds_the_loop() -> None:
    per_run = lambda calls: Counter(c[0] for c in calls if c[2] == "execute")  # noqa: E731
    assert set(per_run(_calls(None)).values()) == {4}  # always errors: 1 + 3 repairs
    assert set(per_run(_calls(KnobSettings(retry_depth={"repair": 1}))).values()) == {2}


def test_max_tokens_knob_caps_every_call() -> None:
    capped = _calls(KnobSettings(max_tokens={"generate": 20, "fix": 20}))
    assert max(c[9] for c in capped if c[2] in ("generate", "fix")) <= 20
    assert max(c[9] for c in _calls(None) if c[2] == "generate") > 20


def test_cli_simulate_without_resources_or_cluster_uses_the_default_cluster(tmp_path) -> None:
    src = tmp_path / "w.cortex"
    src.write_text("""model m { weights = "x"  params = 8B  max_context = 8192  kv_bytes_per_token = 128KiB
                                profile = "llama-3-8b" }
workflow w {
  slo { latency = 5s  attainment = 90% }
  load { rate = 1/s }
  llm a { model = m  prompt = "hi"  max_tokens = 64  input_tokens = 100  output_tokens = 20 }
  flow { a -> done }
}
""")
    out = CliRunner().invoke(runtime_app, ["simulate", str(src), "--runs", "200", "-p", "fcfs"])
    assert out.exit_code == 0, out.output
    assert "SLO met" in out.output and "4xA100, 4xH100, 4xH200" in out.output


def test_model_variant_knob_routes_calls_to_that_models_replicas() -> None:
    models = ("llama8b", "llama70b")
    preferred = _calls(None, models)
    assert {c[4] for c in preferred if c[2] == "generate"} != {"big"}
    swapped = _calls(KnobSettings(models={"generate": "llama70b", "fix": "llama70b"}), models)
    assert {c[4] for c in swapped if c[2] in ("generate", "fix")} == {"big"}
