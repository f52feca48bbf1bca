"""SLO satisfiability: exact success probability, cross-checked against random walks."""

from __future__ import annotations

import random

import pytest

from cortexlang import ir
from cortexlang.passes.slo import fastest_path_s, success_probability
from tests.cortexlang.helpers import codes, llm, workflow

SQL = 'sql q { database = db  service = 100ms }\n'


def _nl2sql(p_fail: float, budget: int) -> ir.Workflow:
    result = workflow(llm("g") + llm("f") + SQL + f"""flow {{
      g -> q
      on q {{ ok -> done  error ({p_fail * 100:g}%) -> f }}
      f -> q loop r max {budget}
    }}""".replace("ok -> done  error", "ok -> done  empty (0%) -> fail  error"))
    assert result.ok, codes(result)
    return result.program.workflows[0]


@pytest.mark.parametrize("p, k", [(0.3, 3), (0.5, 1), (0.1, 0 + 1), (0.9, 5)])
def test_retry_loop_closed_form(p: float, k: int) -> None:
    # A run fails only if the first attempt and all k retries fail: 1 - p^(k+1).
    assert success_probability(_nl2sql(p, k)) == pytest.approx(1 - p ** (k + 1))


def _random_walk(wf: ir.Workflow, rng: random.Random) -> bool:
    counters = {lp.name: 0 for lp in wf.loops}
    children = {lp.name: [c.name for c in wf.loops if c.parent == lp.name] for lp in wf.loops}
    node = wf.entry
    while node not in ir.TERMINALS:
        edges = wf.out_edges(node)
        e = rng.choices(edges, weights=[x.probability for x in edges])[0]
        if e.loop is None:
            node = e.target
            continue
        lp = wf.loop(e.loop)
        if counters[lp.name] >= lp.max_iterations.preferred:
            node = lp.on_exhausted
            continue
        counters[lp.name] += 1
        stack = list(children[lp.name])
        while stack:
            c = stack.pop()
            counters[c] = 0
            stack.extend(children[c])
        node = e.target
    return node == "done"


def test_nested_loops_match_random_walks() -> None:
    result = workflow(llm("plan") + llm("step") + SQL + """flow {
      plan -> step
      step -> q
      on q { ok (40%) -> done
             empty (35%) -> plan loop outer max 2 then fail
             error -> step loop inner max 1 then done within outer }
    }""")
    assert result.ok, codes(result)
    wf = result.program.workflows[0]
    exact = success_probability(wf)
    rng = random.Random(7)
    n = 40_000
    estimate = sum(_random_walk(wf, rng) for _ in range(n)) / n
    assert abs(exact - estimate) < 4 * (exact * (1 - exact) / n) ** 0.5 + 1e-9


def test_unsatisfiable_attainment_is_an_error() -> None:
    body = llm("g") + llm("f") + SQL + """slo { latency = 10s  attainment = 99.5% }
    flow { g -> q  on q { ok -> done  error (30%) -> f  empty (0%) -> fail }  f -> q loop r max 2 }"""
    result = workflow(body)
    assert "CX501" in codes(result)  # 1 - 0.3^3 = 97.3% < 99.5%
    assert workflow(body.replace("max 2", "max 4")).ok  # 1 - 0.3^5 = 99.76%


def test_service_time_floor() -> None:
    result = workflow(llm("g") + 'tool slow { entry = "m:f"  service = 3s }\n'
                      "slo { latency = 2s  attainment = 90% }\nflow { g -> slow -> done }")
    assert "CX501" in codes(result)
    wf = workflow(llm("g") + 'tool slow { entry = "m:f"  service = 3s }\nflow { g -> slow -> done }').program.workflows[0]
    assert fastest_path_s(wf) == (pytest.approx(3.0), ["g", "slow", "done"])
