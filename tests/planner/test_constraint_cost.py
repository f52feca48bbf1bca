"""The planner charges a constrained stage the profile's structured-output decode cost.

Same stage, same load, same profile: with `constrain { sql = sales }` every candidate's latency
table is the unconstrained one with decode time per token scaled by the profile's
`structured_output.decode_factor` (and equal to it when the factor is 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cortexlang.compiler import compile_file
from cortexlang.ir import LLMStage, Program
from planner.candidates import StageLoad, llm_candidates, standalone_table
from planner.profiles import PROFILE_DIR, clear_cache
from tests.conftest import EXAMPLES


def _program(name: str) -> Program:
    result = compile_file(EXAMPLES / f"{name}.cortex")
    assert result.program is not None
    return result.program


def _profiles(tmp_path: Path, factor: float | None) -> Path:
    data = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
    data.pop("structured_output", None)
    if factor is not None:
        data["structured_output"] = {"decode_factor": factor, "grammar_compile_ms": 500.0}
    folder = tmp_path / f"profiles-{factor}"
    folder.mkdir()
    (folder / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
    clear_cache()
    return folder


def _generate(program: Program) -> LLMStage:
    stage = program.workflow().stage("generate")
    assert isinstance(stage, LLMStage)
    return stage


@pytest.mark.parametrize("factor", [1.5, None])
def test_constrained_stage_pays_the_profiles_decode_factor(tmp_path: Path, factor: float | None) -> None:
    folder = _profiles(tmp_path, factor)
    plain, constrained = _program("nl2sql"), _program("nl2sql_constrained")
    assert _generate(plain).constraint is None and _generate(constrained).constraint is not None
    inventory = plain.inventory
    load = StageLoad(rate_per_s=0.05, visits_per_run=1.0)
    free = llm_candidates(plain, _generate(plain), load, inventory, profile_dir=folder).candidates
    held = llm_candidates(constrained, _generate(constrained), load, inventory, profile_dir=folder).candidates
    assert free and len(free) == len(held)
    alone_free = standalone_table(plain, _generate(plain), inventory, folder)
    alone_held = standalone_table(constrained, _generate(constrained), inventory, folder)
    if factor is None:  # no measurement in the profile: no cost assumed
        assert all(np.array_equal(a.table, b.table) for a, b in zip(free, held))
        assert np.array_equal(alone_free, alone_held)
        return
    for a, b in zip(free, held):
        assert np.all(b.table >= a.table) and np.median(b.table) > np.median(a.table)
    # standalone: prefill + tokens x t(1); the decode part grows by the factor, the prefill does not
    assert np.all(alone_held >= alone_free) and np.median(alone_held) < factor * np.median(alone_free)


def test_profile_reads_the_structured_output_entry(tmp_path: Path) -> None:
    from planner.profiles import get_profile

    folder = _profiles(tmp_path, 1.25)
    profile = get_profile("smollm2-135m", "CPU", 1, folder)
    assert profile.constrained_decode_factor == 1.25 and profile.grammar_compile_s == 0.5
    assert profile.decode_factor(True) == 1.25 and profile.decode_factor(False) == 1.0


def test_a_calibrated_profile_keeps_the_shipped_structured_output_cost(tmp_path: Path) -> None:
    from planner.profiles import get_profile, use_calibrated

    shipped = get_profile("smollm2-135m", "CPU", 1)
    calibrated = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
    calibrated.pop("structured_output", None)
    calibrated["decode_fixed_ms"] = 99.0
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(calibrated))
    use_calibrated(tmp_path)
    try:
        profile = get_profile("smollm2-135m", "CPU", 1)
        assert profile.decode_fixed_s == pytest.approx(0.099)  # the calibrated timings
        assert (profile.constrained_decode_factor, profile.grammar_compile_s) == (
            shipped.constrained_decode_factor, shipped.grammar_compile_s)
    finally:
        use_calibrated()
        clear_cache()


def test_a_constrained_stage_in_a_shared_pool_pays_the_decode_factor_too(tmp_path: Path) -> None:
    """nl2sql's generate and fix share one pool: the constrained file's members get tables with the
    decode steps scaled by the factor (the pool's batch point is the same: the mask costs CPU time per
    step, it does not change what the batch holds)."""
    from planner.colocation import Member, shared_point
    from planner.profiles import get_profile

    folder = _profiles(tmp_path, 1.5)
    points = {}
    for name in ("nl2sql", "nl2sql_constrained"):
        program = _program(name)
        wf = program.workflow()
        members = [Member(stage=s, rate_per_s=0.05, max_tokens=s.max_tokens.preferred, hedge=1, prewarm=True)
                   for s in wf.stages if isinstance(s, LLMStage)]
        spec = program.model(members[0].stage.models[0].model)
        profile = get_profile(spec.profile, "CPU", 1, folder)
        points[name] = shared_point(spec, profile, members, replicas=1)
    plain, held = points["nl2sql"], points["nl2sql_constrained"]
    assert plain is not None and held is not None and plain.tables.keys() == held.tables.keys()
    for stage in plain.tables:
        assert np.all(held.tables[stage] >= plain.tables[stage])
        assert np.median(held.tables[stage]) > np.median(plain.tables[stage])
