"""Edge-value mutations of valid example programs: knobs, loop bounds, SLOs and loads at their limits.

The plan fuzz's value family (tests/planner/plan_fuzzing.py: :func:`~tests.planner.plan_fuzzing.mutate`)
swaps any number for one of a dozen values, so it rarely lands on the few attributes that size the
planner's and the simulator's work. This family rewrites exactly those, keeping the file's shape:

* knobs with many alternatives or edge qualities (``width = 64 | 32 @ 99% | ... | 1 @ 1%``,
  ``@ 0.0001%``, ``@ 100%``), huge fan-out widths, loop bounds and ``repeat``/``hedge`` counts;
* SLO attainment at its edges (``0.0001%``, ``99.9999%``, ``100%``) and latencies from ``1us`` to
  ``100000h``;
* load rates from ``1/h`` to ``1000000/s``, burstiness from ``0.0001`` to ``1000``;
* injected ``output_correlation`` (0, 1, just inside 1), tool ``retry`` blocks with huge counts and
  backoffs, service ranges ``0ms..1h`` and coefficients of variation 0 to 1000;
* the output-length law: injected ``runaway`` (0, 0.000000001, 0.5, 0.999, 1) and ``output_cv`` (0, 0.000001, 3,
  10), alone or together with ``output_correlation = 0.99``; ``max_tokens = 1`` and ``output_tokens`` of
  1 or far above the cap, alone or with the law's extremes on the same stage.

Every rewrite is either accepted by `cortexc check` or refused with a diagnostic; what is accepted must
plan and simulate within the plan fuzz's bound. Input ``i`` of seed ``s`` is
``make_edge_input(s, i)`` (its own random stream, so the value family's inputs are unchanged).
"""

from __future__ import annotations

import random
import re

from tests.planner.plan_fuzzing import POLICIES, SEED_FILES

_QUALITY = [b"0%", b"0.0001%", b"1%", b"50%", b"99.9999%", b"100%", b"100.0001%"]
_MANY = b"64 | 32 @ 99% | 16 @ 98% | 8 @ 97% | 4 @ 96% | 2 @ 95% | 1 @ 1%"  # seven alternatives
# The output-length law's extremes, one attribute or several on one stage (lines joined by "\n": the
# language separates attributes by line, whatever the indent).
_LAW = [b"runaway = 0", b"runaway = 0.000000001", b"runaway = 0.5", b"runaway = 0.999", b"runaway = 1",
        b"output_cv = 0", b"output_cv = 0.000001", b"output_cv = 3", b"output_cv = 10",
        b"runaway = 0.999\noutput_cv = 10\noutput_correlation = 0.99",
        b"runaway = 0.000000001\noutput_cv = 3\noutput_correlation = 0.99",
        b"runaway = 0.5\noutput_cv = 0.000001\noutput_correlation = 0.99",
        b"runaway = 1\noutput_cv = 0\noutput_correlation = 0.99",
        b"output_cv = 0\noutput_correlation = 0.99"]

# (what to find, its replacements): the first group of the pattern is kept, the rest replaced.
_REWRITES: list[tuple[re.Pattern[bytes], list[bytes]]] = [
    (re.compile(rb"(\bwidth\s*=\s*)[^\n#]+"),
     [b"1000", b"100000", b"0", b"1", b"4 | 2 @ 0%", b"4 | 2 @ 0.0001%", b"4 | 2 @ 100%", _MANY,
      b"1 | 1 @ 100% | 1 @ 100%", b"128 | 1 @ 99.9999%"]),
    (re.compile(rb"(\bmax\s+)\d+(?:\s*\|\s*\d+\s*@\s*[\d.]+%)*"),
     [b"max 0", b"max 1000", b"max 1000000", b"max 10000 | 1 @ 1%", b"max 1 | 1 @ 100%", b"max 64 | 2 @ 0.0001%"]),
    (re.compile(rb"(\battainment\s*=\s*)[\d.]+%"), _QUALITY),
    (re.compile(rb"(\blatency\s*=\s*)[\d.]+\w+"), [b"1us", b"1ms", b"100ms", b"100000h", b"0s"]),
    (re.compile(rb"(\brate\s*=\s*)[\d.]+/\w+"), [b"1/h", b"0.0001/h", b"1000/s", b"1000000/s", b"1e3/s"]),
    (re.compile(rb"(\bburstiness\s*=\s*)[\d.]+"), [b"0.0001", b"1", b"1000", b"0"]),
    (re.compile(rb"(\bpattern\s*=\s*)\w+"), [b"constant", b"bursty", b"bursty  burstiness = 1000"]),
    (re.compile(rb"(@\s*)[\d.]+%"), _QUALITY),
    (re.compile(rb"(\brepeat\s*=\s*)[^\n#]+"), [b"1000", b"0", b"100000 | 1 @ 1%"]),
    (re.compile(rb"(\bhedge\s*=\s*)[^\n#]+"), [b"64", b"1000", b"0", b"64 | 1 @ 0.0001%"]),
    (re.compile(rb"(\bservice\s*=\s*)[^\n#]+"), [b"0ms..1h", b"1us", b"1h", b"0ms", b"1ms..1ms", b"100000h"]),
    (re.compile(rb"(\bservice_cv\s*=\s*)[^\n#]+"), [b"0", b"1000", b"0.0001"]),
    (re.compile(rb"(\bcount\s*=\s*)\d+"), [b"0", b"1", b"4096", b"1000000"]),
    (re.compile(rb"(\bslots\s*=\s*)\d+"), [b"0", b"1", b"100000"]),
    (re.compile(rb"(\bwidths\s*=\s*)[^\n#]+"), [b"1..1000", b"1 @ 1% | 1000 @ 99%", b"0..0", b"2 @ 0% | 3 @ 100%"]),
    (re.compile(rb"(\bmax_tokens\s*=\s*)[^\n#]+"),
     [b"1", b"1 | 2 @ 99%", b"1\nrunaway = 0.999\noutput_cv = 3", b"1\nrunaway = 0.5\noutput_correlation = 0.99"]),
    (re.compile(rb"(\boutput_tokens\s*=\s*)\d+"),
     [b"1", b"1000000", b"1\noutput_cv = 10\nrunaway = 0.000000001",
      b"1000000\nrunaway = 0.999\noutput_correlation = 0.99", b"1000000\noutput_cv = 0\nrunaway = 0.5"]),
]
# (after a line matching this, a new attribute line): attributes the examples seldom set.
_INJECTIONS: list[tuple[re.Pattern[bytes], list[bytes]]] = [
    (re.compile(rb"\n(\s*)max_tokens\s*=[^\n]*"),
     [b"output_correlation = 1", b"output_correlation = 0", b"output_correlation = 0.999999",
      b"output_correlation = 1.0000001", b"repeat = 1000 | 1 @ 1%", b"hedge = 16 | 1 @ 99.9999%"]),
    (re.compile(rb"\n(\s*)output_tokens\s*=[^\n]*"), _LAW),
    (re.compile(rb"\n(\s*)entry\s*=[^\n]*"),
     [b"retry { max = 1000  backoff = 1h }", b"retry { max = 60  backoff = 1ms }", b"retry { max = 0  backoff = 0ms }",
      b"service = 0ms..100000h", b"budget = 1us"]),
]


def mutate_edges(rng: random.Random, data: bytes) -> bytes:
    """One edge-value rewrite of ``data`` (unchanged when the example has nothing of the kinds drawn): an
    attribute's value replaced, or an attribute line added; the law's rewrites of ``max_tokens`` and
    ``output_tokens`` may also add the stage's ``runaway``/``output_cv``/``output_correlation`` lines."""
    options = [(p, r) for p, r in _REWRITES if p.search(data)] + [(p, r) for p, r in _INJECTIONS if p.search(data)]
    if not options:
        return data
    pattern, values = rng.choice(options)
    match = rng.choice(list(pattern.finditer(data)))
    value = rng.choice(values)
    if pattern in (p for p, _ in _INJECTIONS):
        indent = match.group(1)
        return data[:match.end()] + b"\n" + indent + value.replace(b"\n", b"\n" + indent) + data[match.end():]
    if value.startswith(b"max "):  # the loop pattern's kept group is "max " itself
        value = value[len(b"max "):]
    line_start = data.rfind(b"\n", 0, match.start()) + 1
    indent = re.match(rb"[ \t]*", data[line_start:]).group()
    value = value.replace(b"\n", b"\n" + indent)  # the law's attributes added on lines of their own
    return data[:match.start()] + match.group(1) + value + data[match.end():]


def make_edge_input(seed: int, index: int) -> tuple[bytes, str, bool]:
    """Input ``index`` of edge run ``seed``: (file bytes, simulation policy, verify the plan?), as
    :func:`tests.planner.plan_fuzzing.make_input` returns them."""
    rng = random.Random(f"plan-edges:{seed}:{index}")
    data = rng.choice(SEED_FILES).read_bytes()
    for _ in range(rng.choice([1, 1, 2, 3])):
        data = mutate_edges(rng, data)
    return data, rng.choice(POLICIES), rng.random() < 0.25
