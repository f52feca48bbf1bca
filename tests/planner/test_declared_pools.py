"""Pools the file declares (`pool = NAME`) are honoured by the planner and by the default layout."""

from __future__ import annotations

from cortexlang.compiler import compile_source
from planner.api import plan_program
from planner.plan import Plan
from runtime.build.layout import default_spec

SOURCE = """
model m { weights = "x"  params = 8B  max_context = 8192  kv_bytes_per_token = 128KiB  profile = "llama-3-8b" }
resources { gpu H100 { count = 8  cost = $3/h }  cpu { slots = 16 } }
workflow w {
  inputs = [question]
  slo { latency = 10s  attainment = 95% }
  load { rate = 5/s }
  llm a { model = m  prompt = "{{ question }}"  max_tokens = 200  input_tokens = 1500  output_tokens = 150
          pool = chat }
  llm b { model = m  prompt = "{{ a }}"  max_tokens = 100  input_tokens = 500  output_tokens = 50  pool = chat }
  llm c { model = m  prompt = "{{ b }}"  max_tokens = 100  input_tokens = 500  output_tokens = 50 }
  flow { a -> b -> c -> done }
}
"""


def _program():
    result = compile_source(SOURCE, "w.cortex")
    assert result.program is not None, [str(d) for d in result.diagnostics]
    return result.program


def test_the_planner_keeps_a_declared_pool_together_in_every_layout() -> None:
    program = _program()
    for layout in ("search", "isolated", "shared"):
        plan = plan_program(program, layout=layout)
        assert isinstance(plan, Plan), plan
        pool = plan.workflow("w").pool("a").stages
        assert pool == plan.workflow("w").pool("b").stages and {"a", "b"} <= set(pool), layout
        if layout == "isolated":  # nothing else shares: c keeps a dedicated pool
            assert pool == ("a", "b")


def test_the_default_layout_gives_a_declared_pool_one_set_of_replicas(tmp_path) -> None:
    spec = default_spec(_program(), base_dir=tmp_path, backend="simulated")
    assert sorted(p.stages for p in spec.llm_pools) == [("a", "b"), ("c",)]
