"""Synthetic workflows for simulator tests and experiments, built directly as IR.

Shapes follow the peers' published workloads (see
``shared/reference/published-figures.md``):

* ``nl2sql`` -- schema linking, SQL generation, execution, and a repair loop
  whose retry depth has a long geometric tail (45% of executions fail or come
  back empty, up to 8 repairs), HexGen-Text2SQL style; large shared prompt
  prefixes (the schema) on every LLM stage.
* ``react`` -- a ReAct tool agent shaped after BFCL v3 in Autellix
  (about 10 LLM calls per program, ~735 input / 34 output tokens per call).
* ``longrag`` -- KV-heavy deep research on Llama-3.1-70B (4000-token reports): where stage
  isolation's KV benefit (Cortex paper, Figure 2) is real.
* ``fanout`` -- plan, four parallel search-and-summarise branches (join all),
  then a synthesis call (ShareGPT-sized chat calls, 256 in / 277 out).

All LLM stages but ``longrag``'s run ``llama8b`` (Llama-3-8B profile).
"""

from __future__ import annotations

from cortexlang.ir import (
    SLO, Condition, Edge, FanOut, IntKnob, LLMStage, Load, Loop, ModelOption, ModelSpec, Program, Prompt,
    SQLStage, ToolStage, Workflow,
)

LLAMA8B = ModelSpec(name="llama8b", weights="meta-llama/Meta-Llama-3-8B", params=8.0e9, max_context=8192,
                    kv_bytes_per_token=131072, layers=32, kv_heads=8, head_dim=128, profile="llama-3-8b")
LLAMA70B = ModelSpec(name="llama70b", weights="meta-llama/Meta-Llama-3-70B", params=70.6e9, max_context=8192,
                     kv_bytes_per_token=327680, layers=80, kv_heads=8, head_dim=128, profile="llama-3-70b")

LLAMA70B_LONG = ModelSpec(name="llama70b-long", weights="meta-llama/Llama-3.1-70B", params=70.6e9,
                          max_context=32768, kv_bytes_per_token=327680, layers=80, kv_heads=8, head_dim=128,
                          profile="llama-3-70b")
"""Llama-3.1-70B (same shapes as Llama-3-70B, 128k context; 32k used here): long-prompt workloads."""

ALWAYS = Condition(kind="always")
ELSE = Condition(kind="else")


def llm(name: str, inp: int, out: int, prefix: int = 0, model: str = "llama8b", max_tokens: int | None = None,
        models: tuple[str, ...] | None = None) -> LLMStage:
    opts = tuple(ModelOption(model=m, quality=1.0 if i == 0 else 0.9) for i, m in enumerate(models or (model,)))
    return LLMStage(name=name, models=opts, prompt=Prompt(template=f"{{{{ input }}}} ({name})"),
                    max_tokens=IntKnob.fixed(max_tokens or out * 4), input_tokens=inp, output_tokens=out,
                    prefix_tokens=prefix)


def edge(src: str, dst: str, p: float = 1.0, cond: Condition = ALWAYS, loop: str | None = None) -> Edge:
    return Edge(source=src, target=dst, condition=cond, probability=p, loop=loop)


def outcome(*values: str) -> Condition:
    return Condition(kind="outcome", values=values)


def nl2sql(retry_p: float = 0.45, max_repairs: int = 8, sql_models: tuple[str, ...] | None = None) -> Workflow:
    """NL2SQL with a long-tailed repair loop (see module docstring). ``sql_models``: the model
    options of the SQL-writing stages (``generate``, ``fix``), preferred first, the others at
    90% declared quality; default Llama-3-8B only."""
    ok = 1.0 - retry_p
    return Workflow(
        name="nl2sql", inputs=("question",),
        stages=(
            llm("schema_link", 1400, 48, prefix=1200),
            llm("generate", 1700, 110, prefix=1200, models=sql_models),
            SQLStage(name="execute", database="sales", service_s=0.06, service_cv=1.5),
            llm("fix", 1900, 110, prefix=1000, models=sql_models),
            llm("answer", 600, 90, prefix=300),
        ),
        entry="schema_link",
        edges=(
            edge("schema_link", "generate"),
            edge("generate", "execute"),
            edge("execute", "answer", ok, outcome("ok")),
            edge("execute", "fix", retry_p * 2 / 3, outcome("error")),
            edge("execute", "fix", retry_p / 3, outcome("empty")),
            edge("fix", "execute", loop="repair"),
            edge("answer", "done"),
        ),
        loops=(Loop(name="repair", max_iterations=IntKnob.fixed(max_repairs), on_exhausted="fail"),),
        slo=SLO(latency_s=10.0, attainment=0.99), load=Load(rate_per_s=5.0),
    )


def react(stop_p: float = 0.12, max_steps: int = 20) -> Workflow:
    """A ReAct tool agent: think, act, observe, until the model answers."""
    return Workflow(
        name="react", inputs=("task",),
        stages=(
            llm("think", 735, 34, prefix=500),
            ToolStage(name="act", entry="tools.bfcl:call", service_s=0.25, service_cv=1.0),
            llm("respond", 900, 120, prefix=300),
        ),
        entry="think",
        edges=(
            edge("think", "act", 1.0 - stop_p, Condition(kind="field", field="action", values=("tool",))),
            edge("think", "respond", stop_p, ELSE),
            edge("act", "think", loop="steps"),
            edge("respond", "done"),
        ),
        loops=(Loop(name="steps", max_iterations=IntKnob.fixed(max_steps), on_exhausted="respond"),),
        slo=SLO(latency_s=20.0, attainment=0.99), load=Load(rate_per_s=2.0),
    )


def fanout(width: int = 4) -> Workflow:
    """Plan, ``width`` parallel search+summarise branches (join all), synthesise."""
    return Workflow(
        name="fanout", inputs=("topic",),
        stages=(
            llm("plan", 256, 120, prefix=128),
            ToolStage(name="search", entry="tools.web:search", service_s=0.2, service_cv=0.8),
            llm("summarize", 1200, 160, prefix=200),
            llm("synthesize", 1800, 277, prefix=200),
        ),
        fanouts=(FanOut(name="explore", branches=(("search", "summarize"),), width=IntKnob.fixed(width),
                        join="all"),),
        entry="plan",
        edges=(edge("plan", "explore"), edge("explore", "synthesize"), edge("synthesize", "done")),
        slo=SLO(latency_s=15.0, attainment=0.99), load=Load(rate_per_s=2.0),
    )


def longrag() -> Workflow:
    """KV-heavy deep-research step on a 70B model: retrieve, read, write a long report.

    ``read`` calls are short-lived (3k-token prompt over a cached 2.5k-token
    corpus, 100 tokens out); ``write`` calls generate ~4000 tokens, each
    holding up to ~7k KV tokens for minutes. Planner-sized replicas admit
    ``KV / (prompt + max_tokens)`` sequences: ~150 for ``read``, ~71 for
    ``write``. Pooled, a replica sized for ``read`` fills its KV with
    long-lived ``write`` sequences and preempts them (recomputing thousands of
    tokens); isolated pools keep the two apart (Cortex paper, Figure 2).
    """
    return Workflow(
        name="longrag", inputs=("question",),
        stages=(
            ToolStage(name="retrieve", entry="tools.search:retrieve", service_s=0.3, service_cv=0.5),
            llm("read", 3000, 100, prefix=2500, model="llama70b-long"),
            llm("write", 1200, 4000, prefix=200, model="llama70b-long", max_tokens=6000),
        ),
        entry="retrieve",
        edges=(edge("retrieve", "read"), edge("read", "write"), edge("write", "done")),
        slo=SLO(latency_s=600.0, attainment=0.99), load=Load(rate_per_s=0.5),
    )


def program(*workflows: Workflow) -> Program:
    """A program holding ``workflows`` (default: all three) and the Llama models."""
    return Program(models=(LLAMA70B, LLAMA8B, LLAMA70B_LONG), workflows=workflows or (nl2sql(), react(), fanout()))
