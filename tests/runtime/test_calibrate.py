"""Calibration where Cortex serves (runtime/calibrate.py, runtime/profiles.py, `cortex calibrate`).

Simulated engines follow a known profile (their reported timings are in model seconds,
whatever the speed-up), so measuring them must give that profile back; a calibrated
profile stored for this machine must then be what every lookup returns, labelled as such,
with the shipped one as the fallback. A noisy machine widens the spread and never refuses.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cortexlang.cli.run_cmds import register
from planner.profiles import PROFILE_DIR, ProfileNotFound, get_profile, profiles_for
from runtime import profiles as cache
from runtime.build.layout import BuildError, share_engines, with_cpu_width
from runtime.calibrate import QUICK, Sample, calibrate_orchestrator, calibration_missing, fit, measure
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator import Orchestrator

from .orchestrator.conftest import EXAMPLES, example_spec, sim_factory

SHIPPED = get_profile("smollm2-135m", "CPU", 1)


def _calibrated(spec, factory) -> list:  # type: ignore[no-untyped-def]
    """Start ``spec``'s engines from ``factory``, calibrate them (quick probes), stop them."""
    async def body():
        orch = Orchestrator(spec, factory)
        await orch.start()
        try:
            return await calibrate_orchestrator(orch, QUICK, how="a test")
        finally:
            await orch.stop()

    return asyncio.run(asyncio.wait_for(body(), 120))


def _synthetic(noise: float, seed: int = 0) -> list[Sample]:
    """Samples a machine following SHIPPED would give, each time multiplied by up to 1 + noise."""
    rng = random.Random(seed)
    out = []
    for rep in range(3):
        for n in (64, 512, 1024):
            out.append(Sample("prefill", f"prefill-{n}", 0, rep, SHIPPED.prefill_s(n) * (1 + rng.random() * noise),
                              tokens=n))
        for b, k in ((1, 40), (4, 160), (8, 320), (2, 1600)):
            out.append(Sample("decode", f"decode-{b}+{k}", 0, rep,
                              SHIPPED.decode_step_s(b, k) * (1 + rng.random() * noise), batch=b, kv_tokens=k))
    return out


def test_fit_recovers_a_profile_and_reports_the_spread_of_a_noisy_machine() -> None:
    quiet = fit(_synthetic(0.0))
    assert quiet.coefficients["prefill_us_per_token"] == pytest.approx(SHIPPED.prefill_per_token_s * 1e6, rel=1e-3)
    assert quiet.coefficients["decode_fixed_ms"] == pytest.approx(SHIPPED.decode_fixed_s * 1e3, rel=1e-3)
    assert quiet.coefficients["decode_ns_per_kv_token"] == pytest.approx(SHIPPED.decode_per_kv_token_s * 1e9, rel=1e-2)
    assert quiet.max_spread == pytest.approx(0.0, abs=1e-9) and quiet.decode_error < 1e-3
    noisy = fit(_synthetic(1.0))  # up to 2x slower at random: a busy machine
    assert noisy.max_spread > 0.3  # measured, kept, not refused
    for name in ("prefill_us_per_token", "decode_fixed_ms"):
        assert noisy.slowest[name] > noisy.fastest[name]
        assert noisy.fastest[name] <= noisy.coefficients[name] * 1.05
    with pytest.raises(ValueError, match="too few probes"):
        fit([s for s in _synthetic(0.0) if s.kind == "prefill"])


def test_measuring_simulated_engines_gives_their_profile_back() -> None:
    async def body():
        # Real-time engines: slower than real time, so a busy test machine's late wake-ups stay small
        # against the modelled step times (late wake-ups only add time: compare the fastest fit).
        engines = [SimulatedEngine(SHIPPED, kv_capacity_tokens=50_000, max_num_seqs=16, speedup=0.5)
                   for _ in range(2)]
        for e in engines:
            await e.start()
        try:
            return fit(await measure(engines, QUICK), engines=2)
        finally:
            for e in engines:
                await e.stop()

    got = asyncio.run(asyncio.wait_for(body(), 60))
    assert got.engines == 2 and len({s.engine for s in got.samples}) == 2
    assert got.fastest["prefill_us_per_token"] == pytest.approx(SHIPPED.prefill_per_token_s * 1e6, rel=0.1)
    assert got.fastest["decode_fixed_ms"] == pytest.approx(SHIPPED.decode_fixed_s * 1e3, rel=0.25)


def test_a_calibrated_profile_is_stored_per_machine_and_used_ahead_of_the_shipped_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_MACHINE_KEY", "Test Box, 2 cores")
    slow = SHIPPED.__class__(**{**SHIPPED.__dict__, "prefill_per_token_s": 4 * SHIPPED.prefill_per_token_s,
                                "decode_fixed_s": 4 * SHIPPED.decode_fixed_s, "path": None})

    def factory(spec, pool, rep):  # engines that are 4x slower than the shipped profile says
        return SimulatedEngine(slow, kv_capacity_tokens=rep.kv_capacity_tokens, max_num_seqs=16, speedup=5.0)

    assert cache.describe("smollm2-135m", "CPU").calibrated is False  # before: the shipped fallback
    (done,) = _calibrated(example_spec("nl2sql"), factory)
    assert Path(done.path).parent == cache.machine_dir() and cache.machine_dir().name == "test-box-2-cores"
    assert done.previous_path == str(PROFILE_DIR / "smollm2-135m__cpu__tp1.json")
    stored = json.loads(Path(done.path).read_text())
    assert stored["calibration"]["engines_at_once"] == 2 and stored["calibration"]["samples"]
    assert "fastest" in stored["calibration"] and stored["sources"][0].startswith("calibrated on")
    now = get_profile("smollm2-135m", "CPU", 1)  # every lookup now returns the calibration
    assert now.path == done.path
    assert now.prefill_per_token_s == pytest.approx(slow.prefill_per_token_s, rel=0.1)
    use = cache.describe("smollm2-135m", "CPU")
    assert use.calibrated and "calibrated on this machine" in use.line()
    monkeypatch.setenv("CORTEX_MACHINE_KEY", "another box")  # another machine: the shipped fallback
    assert cache.activate() is None
    assert get_profile("smollm2-135m", "CPU", 1).path == str(PROFILE_DIR / "smollm2-135m__cpu__tp1.json")
    assert "SHIPPED FALLBACK" in cache.describe("smollm2-135m", "CPU").line()


def test_the_machine_key_separates_hosts_that_differ_only_in_vector_width(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two VMs both report "AMD EPYC": one with AVX-512 prefilled SmolLM2 2-4x faster than one with AVX2 only.
    assert cache.vector_extension({"sse2", "avx2"}) == "avx2"
    assert cache.vector_extension({"avx2", "avx512f", "avx512bw"}) == "avx512"
    assert cache.vector_extension({"avx2", "avx512f", "amx_tile", "amx_bf16"}) == "amx"
    assert cache.vector_extension({"fp", "asimd"}) == "neon" and cache.vector_extension({"sse2"}) is None
    monkeypatch.delenv("CORTEX_MACHINE_KEY", raising=False)
    monkeypatch.setattr(cache, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(cache, "cpu_cores", lambda: 2)
    monkeypatch.setattr(cache, "gpus", lambda: None)
    monkeypatch.setattr(cache, "cpu_generation", lambda: None)
    keys = set()
    for flags in ({"avx2"}, {"avx2", "avx512f"}, set()):
        monkeypatch.setattr(cache, "_cpu_flags", lambda flags=flags: flags)
        keys.add(cache.machine_key())
    assert keys == {"amd-epyc-avx2-2c", "amd-epyc-avx512-2c", "amd-epyc-2c"}


def test_the_machine_key_separates_cpu_generations_behind_one_generic_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Zen 4 (family 25) and Zen 5 (family 26) VMs both report "AMD EPYC" with AVX-512.
    monkeypatch.delenv("CORTEX_MACHINE_KEY", raising=False)
    monkeypatch.setattr(cache, "cpu_cores", lambda: 2)
    monkeypatch.setattr(cache, "gpus", lambda: None)
    monkeypatch.setattr(cache, "_cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setattr(cache, "cpu_model", lambda: "AMD EPYC")
    keys = set()
    for generation in ("f25m17", "f26m2"):
        monkeypatch.setattr(cache, "cpu_generation", lambda generation=generation: generation)
        keys.add(cache.machine_key())
    assert keys == {"amd-epyc-f25m17-avx512-2c", "amd-epyc-f26m2-avx512-2c"}
    # a model name with a model number says enough on its own
    monkeypatch.setattr(cache, "cpu_model", lambda: "AMD EPYC 9654 96-Core Processor")
    assert cache.machine_key() == "amd-epyc-9654-96-core-processor-avx512-2c"
    generation = cache.cpu_generation()  # this machine's, where /proc/cpuinfo has one
    assert generation is None or re.fullmatch(r"f\d+m\d+", generation)


@pytest.mark.skipif(cache.cpu_cores() < 2, reason="two-core engines need a machine with two cores")
def test_a_profile_holds_for_the_width_it_was_measured_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU engine's width (cores) keys its profile: engines calibrated two cores wide store a tp2
    profile beside the one-core one, the planner may then weigh them, and an unmeasured width falls
    back to the widest narrower profile, said so in the profile line."""
    monkeypatch.setenv("CORTEX_MACHINE_KEY", "Test Box, 4 cores")
    fast = SHIPPED.__class__(**{**SHIPPED.__dict__, "decode_fixed_s": SHIPPED.decode_fixed_s / 2, "path": None})

    def factory(spec, pool, rep):
        return SimulatedEngine(fast, kv_capacity_tokens=rep.kv_capacity_tokens, max_num_seqs=16, speedup=5.0)

    spec = with_cpu_width(share_engines(example_spec("nl2sql")), 2)  # one engine, two cores wide
    assert [(r.tp, r.engine.tensor_parallel_size, r.engine.cpu_threads_bind)
            for p in spec.llm_pools for r in p.replicas] == [(2, 1, "0-1")]

    stand_in = cache.describe("smollm2-135m", "CPU", 2)  # before: no tp2 profile anywhere
    assert stand_in.measured_tp == 1 and "MEASURED AT tp1" in stand_in.line()
    (done,) = _calibrated(spec, factory)
    assert done.tp == 2 and Path(done.path).name == "smollm2-135m__cpu__tp2.json"
    assert "each pinned to 2 core(s)" in json.loads(Path(done.path).read_text())["notes"]
    assert [p.tp for p in profiles_for("smollm2-135m", "CPU")] == [1, 2]
    assert get_profile("smollm2-135m", "CPU", 1).path == str(PROFILE_DIR / "smollm2-135m__cpu__tp1.json")
    assert get_profile("smollm2-135m", "CPU", 2).path == done.path
    assert cache.describe("smollm2-135m", "CPU", 2).measured_tp is None
    assert get_profile("smollm2-135m", "CPU", 3).path == done.path  # 3 cores: the 2-core stand-in
    with pytest.raises(ProfileNotFound):
        get_profile("llama-3-8b", "H100", 2)  # GPUs never fall back: TP changes more than speed


def test_cpu_widths_beyond_the_machine_are_refused() -> None:
    spec = with_cpu_width(example_spec("nl2sql"), 1)
    with pytest.raises(BuildError, match="exceed this machine's"):  # engines that would share cores
        with_cpu_width(spec.model_copy(update={"llm_pools": spec.llm_pools * cache.cpu_cores()}), 2)


def _app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_cortex_calibrate_refuses_a_cpu_width_the_machine_does_not_have() -> None:
    wide = CliRunner().invoke(_app(), ["calibrate", str(EXAMPLES / "nl2sql.cortex"), "--engine", "simulated",
                                       "--quick", "--no-plan", "--cpu-width", "4096"])
    assert wide.exit_code == 2 and "--cpu-width 4096: a CPU engine is 1 to" in wide.output
    assert "Traceback" not in wide.output


def test_cortex_calibrate_and_run_say_which_profile_they_use(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["calibrate", str(EXAMPLES / "nl2sql.cortex"), "--engine", "simulated",
                                         "--quick", "--no-plan"])
    assert result.exit_code == 0, result.output
    assert "calibrating 2 simulated engine(s) on" in result.output
    assert "measured, not stored" in result.output and "prefill_us_per_token" in result.output
    assert not any(cache.cache_root().glob("*/*.json"))  # a simulated calibration is never stored
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "total revenue in 2024?"}) + "\n")
    run = CliRunner().invoke(_app(), ["run", str(EXAMPLES / "nl2sql.cortex"), "--input", str(questions),
                                      "--engine", "simulated", "--no-plan"])
    assert run.exit_code == 0, run.output
    assert "profile smollm2-135m on CPU tp1: SHIPPED FALLBACK" in run.output


def test_sim_factory_still_works_with_calibration_module_loaded() -> None:
    # The orchestrator fixtures build engines from the replica's profile lookup: unaffected by the
    # cache (empty in tests) -- a guard that the autouse fixture keeps the shipped profiles.
    assert sim_factory() is not None and get_profile("smollm2-135m", "CPU", 1).path.startswith(str(PROFILE_DIR))


def test_calibration_measures_engines_alone_and_their_contention_when_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two simulated CPU engines that slow each other down (prefill x2, decode x1.5 while the other
    computes) give the profile they have alone, and that contention, in the stored profile; a later
    one-engine calibration cannot measure contention and keeps the machine's."""
    from runtime.engines.shared_cores import SharedCores

    monkeypatch.setenv("CORTEX_MACHINE_KEY", "Contention Box, 2 cores")
    contending = SHIPPED.__class__(**{**SHIPPED.__dict__, "contention_prefill": 1.0, "contention_decode": 0.5,
                                      "path": None})
    machine = SharedCores()

    def factory(spec, pool, rep):
        return SimulatedEngine(contending, kv_capacity_tokens=rep.kv_capacity_tokens, max_num_seqs=16,
                               speedup=4.0, cores=machine, width=rep.tp)

    two = with_cpu_width(example_spec("nl2sql"), 1)
    one = with_cpu_width(share_engines(two), 1)  # one engine on one core
    assert calibration_missing(two) == ["smollm2-135m on CPU tp1: not calibrated on this machine"]
    (one_only,) = _calibrated(one, factory)  # one engine first
    assert calibration_missing(one) == []
    assert calibration_missing(two) == ["2 CPU engines: their contention was never measured"]
    assert "cpu_contention" not in json.loads(Path(one_only.path).read_text())
    (done,) = _calibrated(two, factory)
    stored = json.loads(Path(done.path).read_text())
    record = stored["cpu_contention"]
    assert record["engines_at_once"] == 2 and record["samples"]
    assert record["prefill"] == pytest.approx(1.0, abs=0.35) and record["decode"] == pytest.approx(0.5, abs=0.25)
    # The engine alone: no contention in the coefficients (together they would be ~2x; a busy test
    # machine's late wake-ups only add time).
    assert done.calibration.fastest["prefill_us_per_token"] == pytest.approx(
        SHIPPED.prefill_per_token_s * 1e6, rel=0.3)
    assert stored["calibration"]["measured"] == "alone" and "contention with every other engine busy" in stored["notes"]
    now = get_profile("smollm2-135m", "CPU", 1)
    assert now.contention_prefill == record["prefill"] and now.contention_decode == record["decode"]
    assert calibration_missing(two) == [] == calibration_missing(one)  # one engine or two: described

    (again,) = _calibrated(one, factory)  # one engine: nothing to measure
    kept = json.loads(Path(again.path).read_text())["cpu_contention"]
    assert kept["prefill"] == record["prefill"] and kept["inherited_from"] == done.path
    assert "samples" not in kept and "kept from" in json.loads(Path(again.path).read_text())["notes"]


@pytest.mark.parametrize("damage", [{"cpu_contention": {"prefill": "abc"}}, {"cpu_contention": {"decode": -0.5}},
                                    {"decode_fixed_ms": None}])
def test_an_unreadable_calibrated_profile_is_skipped_and_said(tmp_path: Path, damage: dict) -> None:
    """A hand-edited or truncated file in the cache never crashes a lookup: it is skipped (the shipped
    profile serves) and `unreadable_profiles` says why."""
    from planner.profiles import clear_cache, unreadable_profiles, use_calibrated

    data = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text()) | damage
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
    use_calibrated(tmp_path)
    clear_cache()
    try:
        assert get_profile("smollm2-135m", "CPU", 1).path == str(PROFILE_DIR / "smollm2-135m__cpu__tp1.json")
        (why,) = unreadable_profiles().values()
        assert "Error" in why
    finally:
        use_calibrated()
        clear_cache()


def test_a_batchs_step_time_is_its_last_admitted_requests() -> None:
    """Two requests sent together, the second admitted an iteration later: the first decodes through the
    second's 3 s prefill (its mean step 180 ms), the second only beside a decoding request (55 ms). The
    batch's step is the second's; the median of the two was their inflated mean."""
    from types import SimpleNamespace

    from runtime.calibrate import batch_step_s

    def result(ttft: float, total: float, tokens: int = 24):
        return SimpleNamespace(timing=SimpleNamespace(ttft_s=ttft, total_s=total), output_tokens=tokens)

    first, second = result(3.0, 3.0 + 23 * 0.180), result(6.0, 6.0 + 23 * 0.055)
    assert batch_step_s([first, second]) == pytest.approx(0.055)
    assert batch_step_s([result(1.0, 1.0 + 23 * 0.05)]) == pytest.approx(0.05)
    assert batch_step_s([result(1.0, 1.0, tokens=1)]) is None


def _quick_samples(slow: dict[str, float] | None = None) -> list[Sample]:
    """One sample per quick-shaped probe from SHIPPED, probe ``name`` multiplied by ``slow[name]``."""
    slow = slow or {}
    out = [Sample("prefill", f"prefill-{n}", 0, 0, SHIPPED.prefill_s(n) * slow.get(f"prefill-{n}", 1.0), tokens=n)
           for n in (64, 768)]
    for b, pad in ((1, 640), (1, 320), (2, 640), (4, 640)):
        kv = b * (pad + 33)
        out.append(Sample("decode", f"decode-{b}+{pad}", 0, 0,
                          SHIPPED.decode_step_s(b, kv) * slow.get(f"decode-{b}+{pad}", 1.0), batch=b, kv_tokens=kv))
    return out


def test_a_probe_bent_by_one_slow_sample_is_named_for_measuring_again() -> None:
    from runtime.calibrate import coefficients_of, suspect_probes

    before = coefficients_of(SHIPPED)
    assert suspect_probes(_quick_samples(), before) == []
    # the prefill fit is exact (two lengths, two coefficients): only the last calibration can tell
    assert suspect_probes(_quick_samples({"prefill-768": 1.6}), before) == ["prefill-768"]
    assert suspect_probes(_quick_samples({"prefill-768": 1.6}), None) == []  # no calibration here before
    # the decode fit has a probe to spare: a 2x step shows as a miss of the fit
    assert "decode-2+640" in suspect_probes(_quick_samples({"decode-2+640": 2.0}), None)
    # three samples: the median already rejects one outlier
    thrice = [Sample(**{**s.__dict__, "repeat": r}) for s in _quick_samples({"prefill-768": 1.6}) for r in range(3)]
    assert suspect_probes(thrice, before) == []


class _OneHiccup(SimulatedEngine):
    """A simulated engine whose first long prefill reports a TTFT three times too long (a host hiccup)."""

    hiccups = 1

    async def generate(self, request):  # type: ignore[no-untyped-def]
        result = await super().generate(request)
        if request.max_tokens == 1 and result.prompt_tokens > 500 and self.hiccups:
            self.hiccups -= 1
            return result.model_copy(update={"timing": result.timing.model_copy(
                update={"ttft_s": 3 * result.timing.ttft_s})})
        return result


def test_an_outlier_is_measured_again_and_no_longer_bends_the_fit() -> None:
    from runtime.calibrate import coefficients_of, measure_alone

    async def body():
        engine = _OneHiccup(SHIPPED, kv_capacity_tokens=50_000, max_num_seqs=16, speedup=4.0)
        await engine.start()
        try:
            return await measure_alone(engine, 0, QUICK, coefficients_of(SHIPPED))
        finally:
            await engine.stop()

    samples, reprobed = asyncio.run(asyncio.wait_for(body(), 60))
    assert reprobed == ["prefill-768"]
    assert sum(1 for s in samples if s.probe == "prefill-768") == 3
    got = fit(samples)
    assert got.coefficients["prefill_us_per_token"] == pytest.approx(SHIPPED.prefill_per_token_s * 1e6, rel=0.15)
    first_pass = samples[:len(QUICK.prefill_lengths) + len(QUICK.decode_batches) + len(QUICK.long_contexts)]
    bent = fit(first_pass).coefficients["prefill_us_per_token"]
    assert bent > 2 * SHIPPED.prefill_per_token_s * 1e6  # what one hiccup did to the fit before
