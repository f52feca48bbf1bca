"""Which family do real output lengths follow: Gamma or lognormal?

The planner and the simulator must read one family for a declared ``(mean, CV)`` law (an LLM stage's
``output_tokens``/``output_cv``, a SQL/tool stage's ``service_s``/``service_cv``). This benchmark decides it
by data: the lengths of the calls that *stopped on their own* (``finish_reason == "stop"``) in a recorded real
run, per LLM stage, fitted by each family twice -- matched to the sample's mean and CV (what the planner and
the simulator do with a declared or learnt law), and by maximum likelihood -- and scored by

* the log-likelihood of the lengths. Lengths are whole tokens, so a length ``k`` scores
  ``log(F(k + 1/2) - F(k - 1/2))`` (the simulator rounds its continuous draw to the nearest token); the
  continuous density's ``sum log f(k)`` is given too;
* the Kolmogorov-Smirnov distance ``sup_k |F_n(k) - F(k + 1/2)|`` over whole ``k`` (the sup of a step
  function against the rounded law's CDF: at each observed length and just before it).

Both fits ignore the cap: a stopped call is one whose length fell below ``max_tokens``; the share of each
fitted law beyond the cap (``P(X > cap)``) is printed to show how little that truncation weighs.

MLE: lognormal ``mu, sigma`` are the mean and (population) standard deviation of ``log x``; Gamma's shape
``k`` solves ``log k - psi(k) = log mean(x) - mean(log x)`` (bisection; ``psi`` the digamma), scale
``mean / k``. Gamma's CDF is the regularised lower incomplete gamma ``P(k, x / theta)`` (series below
``k + 1``, Lentz's continued fraction for the upper part above).

Run: ``.venv/bin/python -m benchmarks.output_family_fit [--trace PATH]``; writes
``benchmarks/results/output_family_fit.md``. No timing: figures depend on the trace only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "benchmarks" / "results" / "real_vs_sim_trace_intel_xeon_2026-12-07_2010.jsonl"

Cdf = Callable[[float], float]
LogPdf = Callable[[float], float]


# --------------------------------------------------------------------------- the two families


def _digamma(x: float) -> float:
    """``psi(x)`` for ``x > 0``: the recurrence ``psi(x) = psi(x + 1) - 1/x`` up to 10, then the asymptotic
    series ``log x - 1/(2x) - 1/(12x^2) + 1/(120x^4) - 1/(252x^6)`` (error below 1e-10 there)."""
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    return acc + math.log(x) - 0.5 / x - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 / 252.0))


def _lower_gamma_regularised(a: float, x: float) -> float:
    """``P(a, x) = gamma(a, x) / Gamma(a)``: the series ``x^a e^-x / Gamma(a + 1) sum x^n / ((a+1)...(a+n))``
    below ``a + 1``, ``1 - Q`` with ``Q``'s continued fraction (modified Lentz) above."""
    if x <= 0.0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = 0
        while abs(term) > abs(total) * 1e-15 and n < 10_000:
            n += 1
            term *= x / (a + n)
            total += term
        return min(total * math.exp(log_front), 1.0)
    tiny = 1e-300
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return max(1.0 - math.exp(log_front) * h, 0.0)


def gamma_law(shape: float, scale: float) -> tuple[Cdf, LogPdf]:
    """CDF and log-density of Gamma(``shape``, ``scale``)."""
    def cdf(x: float) -> float:
        return _lower_gamma_regularised(shape, x / scale)

    def logpdf(x: float) -> float:
        return (shape - 1.0) * math.log(x) - x / scale - math.lgamma(shape) - shape * math.log(scale)
    return cdf, logpdf


def lognormal_law(mu: float, sigma: float) -> tuple[Cdf, LogPdf]:
    """CDF and log-density of the lognormal with log-mean ``mu`` and log-sd ``sigma``."""
    def cdf(x: float) -> float:
        return 0.0 if x <= 0.0 else 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2.0)))

    def logpdf(x: float) -> float:
        z = (math.log(x) - mu) / sigma
        return -0.5 * z * z - math.log(x * sigma * math.sqrt(2.0 * math.pi))
    return cdf, logpdf


def gamma_moments(mean: float, cv: float) -> tuple[float, float]:
    """Gamma (shape, scale) of this mean and CV: ``k = 1 / cv^2``, ``theta = mean cv^2``."""
    return 1.0 / (cv * cv), mean * cv * cv


def gamma_mle(xs: Sequence[float]) -> tuple[float, float]:
    """Gamma (shape, scale) by maximum likelihood (module docstring)."""
    target = math.log(statistics.fmean(xs)) - statistics.fmean(math.log(x) for x in xs)
    lo, hi = 1e-4, 1e6  # log k - psi(k) falls from +inf to 0 as k grows
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if math.log(mid) - _digamma(mid) > target:
            lo = mid
        else:
            hi = mid
    shape = math.sqrt(lo * hi)
    return shape, statistics.fmean(xs) / shape


def lognormal_moments(mean: float, cv: float) -> tuple[float, float]:
    """Lognormal (mu, sigma) of this mean and CV: ``sigma^2 = log(1 + cv^2)``, ``mu = log mean - sigma^2 / 2``."""
    s2 = math.log1p(cv * cv)
    return math.log(mean) - s2 / 2.0, math.sqrt(s2)


def lognormal_mle(xs: Sequence[float]) -> tuple[float, float]:
    """Lognormal (mu, sigma) by maximum likelihood: the mean and population sd of the logs."""
    logs = [math.log(x) for x in xs]
    return statistics.fmean(logs), statistics.pstdev(logs)


# --------------------------------------------------------------------------- scores


def scores(xs: Sequence[int], cdf: Cdf, logpdf: LogPdf, cap: int | None) -> tuple[float, float, float, float]:
    """(whole-token log-likelihood, continuous log-likelihood, KS distance, P(X > cap)) of integer lengths
    ``xs`` under a law (module docstring)."""
    n = len(xs)
    ll_tokens = sum(math.log(max(cdf(k + 0.5) - cdf(k - 0.5), 1e-300)) for k in xs)
    ll_density = sum(logpdf(float(k)) for k in xs)
    ks = 0.0
    below = 0
    for k in sorted(set(xs)):
        ks = max(ks, abs(below / n - cdf(k - 0.5)))  # just before the step at k
        below += xs.count(k)
        ks = max(ks, abs(below / n - cdf(k + 0.5)))
    beyond = 1.0 - cdf(cap) if cap is not None else float("nan")
    return ll_tokens, ll_density, ks, beyond


def stopped_lengths(trace: Path) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per LLM stage: the output lengths of the calls that stopped on their own, and the cap (the length of
    the calls cut at ``max_tokens``; None when none was cut)."""
    lengths: dict[str, list[int]] = {}
    caps: dict[str, int] = {}
    for line in trace.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        for call in json.loads(line)["calls"]:
            if call.get("kind") != "llm" or not call.get("output_tokens"):
                continue
            if call.get("finish_reason") == "stop":
                lengths.setdefault(call["stage"], []).append(int(call["output_tokens"]))
            elif call.get("finish_reason") == "length":
                caps[call["stage"]] = max(caps.get(call["stage"], 0), int(call["output_tokens"]))
    return lengths, caps


def rows(trace: Path) -> tuple[list[str], list[str]]:
    """Markdown rows: per stage and fit, the scores of each family; and per stage and fit, which family
    scores better on each count (a sentence each)."""
    lengths, caps = stopped_lengths(trace)
    out, verdicts = [], []
    for stage, xs in sorted(lengths.items()):
        mean = statistics.fmean(xs)
        cv = statistics.pstdev(xs) / mean
        cap = caps.get(stage)
        fits = (("Gamma", "mean & CV", gamma_law(*gamma_moments(mean, cv))),
                ("lognormal", "mean & CV", lognormal_law(*lognormal_moments(mean, cv))),
                ("Gamma", "MLE", gamma_law(*gamma_mle(xs))),
                ("lognormal", "MLE", lognormal_law(*lognormal_mle(xs))))
        scored = {}
        for family, how, (cdf, logpdf) in fits:
            ll, lld, ks, beyond = scores(xs, cdf, logpdf, cap)
            scored[family, how] = (ll, ks)
            out.append(f"| {stage} | {len(xs)} | {mean:.1f} | {cv:.2f} | {family} | {how} | {ll:.2f} | {lld:.2f} "
                       f"| {ks:.3f} | {beyond:.1%} |")
            print(out[-1], flush=True)
        for how in ("mean & CV", "MLE"):
            (llg, ksg), (lll, ksl) = scored["Gamma", how], scored["lognormal", how]
            verdicts.append(f"- {stage}, {how}: higher likelihood {'lognormal' if lll > llg else 'Gamma'} "
                            f"(by {abs(lll - llg):.2f} nats), smaller KS {'lognormal' if ksl < ksg else 'Gamma'} "
                            f"({min(ksl, ksg):.3f} vs {max(ksl, ksg):.3f})")
    return out, verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "output_family_fit.md")
    args = ap.parse_args()
    table, verdicts = rows(args.trace)
    print(*verdicts, sep="\n")
    name = args.trace.relative_to(REPO) if args.trace.is_relative_to(REPO) else args.trace
    args.out.write_text("\n".join([
        "# Output lengths of real calls: Gamma or lognormal?", "",
        f"Command: `.venv/bin/python -m benchmarks.output_family_fit --trace {name}`. The calls that stopped on "
        "their own (`finish_reason == \"stop\"`), per LLM stage; each family fitted to the sample's mean and CV "
        "and by maximum likelihood. LL: log-likelihood of the whole-token lengths (rounded law), and of the "
        "continuous density; KS: Kolmogorov-Smirnov distance to the rounded law (smaller is better); "
        "P(X > cap): the fitted law's share beyond max_tokens (ignored by the fit).", "",
        "| stage | calls | mean | CV | family | fit | LL (tokens) | LL (density) | KS | P(X > cap) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|", *table, "", *verdicts, ""]), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
