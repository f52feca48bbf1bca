"""The example workflows compile, and every tool they name resolves and runs."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from cortexlang.compiler import compile_file
from cortexlang.ir import LLMStage, Program, SubFlow, ToolStage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINE = ["rag", "react_agent", "deep_research"]


def compiled(name: str) -> Program:
    result = compile_file(str(EXAMPLES / f"{name}.cortex"))
    assert result.ok, "\n".join(str(d) for d in result.diagnostics)
    assert not result.diagnostics, "\n".join(str(d) for d in result.diagnostics)
    return result.program


@pytest.mark.parametrize("name", MINE)
def test_compiles_cleanly_with_llama3_models(name: str) -> None:
    program = compiled(name)
    small, large = program.model("llama8b"), program.model("llama70b")
    assert (small.layers, small.kv_heads, small.head_dim, small.params) == (32, 8, 128, 8.0e9)
    assert small.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB per token in bf16
    assert (large.layers, large.kv_heads, large.head_dim, large.params) == (80, 8, 128, 70.6e9)
    assert {g.kind for g in program.inventory.gpus} == {"A100", "H100", "H200"}
    workflow = program.workflow()
    assert workflow.slo is not None and workflow.load is not None
    assert all(s.cache is not None for s in workflow.stages if isinstance(s, ToolStage) and "retrieval" in s.entry)


def test_rag_shape() -> None:
    wf = compiled("rag").workflow()
    retrieve = wf.fanout("retrieve")
    assert retrieve.join == "all" and retrieve.branches == tuple(SubFlow.chain((s,)) for s in ("dense", "sparse", "web"))
    answer = wf.stage("answer")
    assert isinstance(answer, LLMStage)
    assert [m.model for m in answer.models] == ["llama70b", "llama8b"] and answer.models[1].quality == 0.9
    assert answer.hedge.preferred == 2 and answer.hedge.malleable
    assert wf.stage("verify").output == "json"
    assert {e.condition.field for e in wf.out_edges("verify")} == {"verdict"}
    assert wf.loop("revision").max_iterations.preferred == 2


def test_react_shape() -> None:
    wf = compiled("react_agent").workflow()
    think = wf.stage("think")
    assert think.output == "json" and (think.input_tokens, think.output_tokens) == (735, 34)
    assert {e.target for e in wf.out_edges("think")} == {"search", "lookup", "calculate", "answer"}
    steps = wf.loop("steps")
    assert steps.on_exhausted == "answer" and [o.value for o in steps.max_iterations.options] == [10, 6]
    assert {e.source for e in wf.edges if e.loop == "steps"} == {"search", "lookup", "calculate"}


def test_deep_research_shape() -> None:
    wf = compiled("deep_research").workflow()
    research = wf.fanout("research")
    assert research.branches == (SubFlow.chain(("search", "summarize")),)
    assert [o.value for o in research.width.options] == [4, 2]
    assert wf.loop("refetch").parent == "rounds"
    assert wf.loop("refetch").on_exhausted == "synthesize"
    assert [o.value for o in wf.loop("rounds").max_iterations.options] == [3, 2]


def tool_entries() -> list[tuple[str, str]]:
    return sorted({(name, s.entry) for name in MINE for s in compiled(name).workflow().stages
                   if isinstance(s, ToolStage)})


def test_tool_entries_resolve_relative_to_the_cortex_file() -> None:
    """The runtime imports `module:function` with the .cortex file's directory on the path."""
    entries = [entry for _, entry in tool_entries()]
    script = (
        "import importlib, sys\n"
        "for entry in sys.argv[1:]:\n"
        "    module, function = entry.split(':')\n"
        "    assert callable(getattr(importlib.import_module(module), function)), entry\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *entries], cwd=EXAMPLES, capture_output=True, text=True,
                          env={"PYTHONPATH": str(EXAMPLES)}, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("workflow, entry", tool_entries())
def test_every_tool_runs_on_a_workflow_context(workflow: str, entry: str) -> None:
    module, function = entry.split(":")
    tool = getattr(importlib.import_module(f"examples.{module}"), function)
    contexts = {
        "rag": {"question": "What is the return window for Enterprise customers?",
                "rewrite": {"text": "return window Enterprise"}},
        "react_agent": {"question": "What do 3 Vista 27 4K cost?",
                        "think": {"action": "x", "input": "3 * 449" if "calculator" in entry else "Vista 27 4K"}},
        "deep_research": {"question": "How do discounts work?", "branch": 1, "attempt": 1,
                          "plan": {"queries": ["volume discount tiers", "discount approval"]},
                          "research": {"branches": [{"search": {"hits": [
                              {"url": "https://kb.northstar.example/policy/volume-discount-tiers", "score": 3.0}]}}]}},
    }
    if entry == "tools.fetch:fetch_sources":
        from examples.tools.fetch import FlakyUpstream, make_fetch_sources
        tool = make_fetch_sources(FlakyUpstream(0.0))  # the shipped one is flaky on purpose
    if entry == "tools.fetch:backoff":
        from examples.tools.fetch import make_backoff
        tool = make_backoff(sleep=lambda _: None)
    result = tool(contexts[workflow])
    assert isinstance(result, dict) and result


@pytest.mark.parametrize("name", MINE)
def test_files_are_in_canonical_format(name: str) -> None:
    from cortexlang.fmt import format_module

    result = compile_file(str(EXAMPLES / f"{name}.cortex"))
    assert format_module(result.module) == (EXAMPLES / f"{name}.cortex").read_text(encoding="utf-8")
