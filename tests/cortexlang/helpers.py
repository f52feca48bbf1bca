"""Small builders for front-end tests."""

from __future__ import annotations

from cortexlang.compiler import CompileResult, compile_source

MODEL = '''model m {
  weights = "m"
  params = 8B
  max_context = 8192
  kv_bytes_per_token = 128KiB
}
database db { url = "sqlite:///x.db" }
'''


def workflow(body: str, header: str = MODEL) -> CompileResult:
    """Compile ``header`` plus ``workflow w { body }``."""
    return compile_source(header + "workflow w {\n" + body + "\n}\n", "t.cortex")


def llm(name: str, extra: str = "") -> str:
    return (f'llm {name} {{ model = m  prompt = "p"  max_tokens = 16  input_tokens = 10  '
            f'output_tokens = 5 {extra} }}\n')


def codes(result: CompileResult) -> list[str]:
    return [d.code for d in result.diagnostics]
