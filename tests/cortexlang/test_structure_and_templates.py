"""Structure pass (schema, names, duplicates) and template pass, one behaviour per test."""

from __future__ import annotations

import pytest

from cortexlang.compiler import compile_source
from tests.cortexlang.helpers import MODEL, codes, llm, workflow


def test_unknown_attribute_suggests_and_does_not_also_report_missing() -> None:
    result = workflow('llm g { model = m  prompt = "p"  max_token = 5  input_tokens = 1  output_tokens = 1 }\nflow { g -> done }')
    assert codes(result) == ["CX102"]
    assert result.diagnostics[0].hint == "did you mean `max_tokens`?"


def test_attribute_that_is_a_block_gets_a_hint() -> None:
    result = workflow('sql q { database = db  cache = 5m }\n' + llm("g") + "flow { g -> q -> done }")
    (d,) = [d for d in result.diagnostics if d.code == "CX102"]
    assert "is a block" in d.hint


def test_block_in_the_wrong_place_says_where_it_belongs() -> None:
    result = compile_source('workflow w {\n  gpu H100 { count = 1  cost = $1/h }\n}', "t")
    (d,) = [d for d in result.diagnostics if d.code == "CX108"]
    assert "`resources`" in d.message


def test_reserved_word_cannot_name_a_stage() -> None:
    result = workflow('tool loop { entry = "m:f"  service = 1ms }\nflow { loop -> done }')
    assert "CX201" in codes(result) or "CX001" in codes(result)
    assert not result.ok


def test_names_share_one_namespace_for_stages_and_fanouts() -> None:
    result = workflow('tool a { entry = "m:f"  service = 1ms }\nfanout a { branches = [a] }\nflow { a -> done }')
    assert "CX105" in codes(result)


def test_context_window_too_small() -> None:
    result = workflow('llm g { model = m  prompt = "p"  max_tokens = 8000  input_tokens = 500  output_tokens = 1 }\nflow { g -> done }')
    assert codes(result) == ["CX203"]


def test_shared_prefix_longer_than_the_prompt_is_refused() -> None:
    # Found by the plan fuzzer: prefix_tokens = 1,000,000 on a 2,000-token prompt was simulated for minutes.
    result = workflow('llm g { model = m  prompt = "p"  max_tokens = 10  input_tokens = 500  output_tokens = 1\n'
                      '  prefix_tokens = 1000000 }\nflow { g -> done }')
    (d,) = result.diagnostics
    assert d.code == "CX203" and "prefix of 1000000 tokens" in d.message and "input_tokens = 500" in d.message
    assert d.span is not None and d.span.col == len("  prefix_tokens = ") + 1  # the caret is under the prefix
    assert workflow(llm("g").replace("output_tokens", "prefix_tokens = 1  output_tokens") + "flow { g -> done }").ok


def test_vars_are_template_variables() -> None:
    ok = workflow('vars { schema = "t(a int)" }\n' + llm("g").replace('"p"', '"{{ schema }} {{ previous }}"')
                  + "flow { g -> done }")
    assert ok.ok and codes(ok) == []
    assert ok.program.workflows[0].vars == {"schema": "t(a int)"}


def test_template_error_points_at_the_prompt() -> None:
    result = workflow(llm("g").replace('"p"', '"{{ unclosed"') + "flow { g -> done }")
    (d,) = result.diagnostics
    assert d.code == "CX601" and d.span is not None and "line 1" in d.message


def test_sql_query_must_name_a_writing_stage() -> None:
    result = workflow(llm("g") + "sql q { database = db  query = q2 }\nsql q2 { database = db }\n"
                      "flow { g -> q -> q2 -> done }")
    assert "CX301" not in codes(result)
    assert "CX302" in codes(result)


def test_bad_sqlalchemy_url() -> None:
    result = compile_source(MODEL.replace('"sqlite:///x.db"', '"not a url"'), "t")
    assert codes(result) == ["CX201"]


def test_a_template_nested_too_deeply_is_a_template_error() -> None:
    result = workflow(llm("g").replace('"p"', '"{{ ' + "(" * 2000 + "1" + ")" * 2000 + ' }}"') + "flow { g -> done }")
    (d,) = result.diagnostics
    assert d.code == "CX601" and "nest too deeply" in d.message


@pytest.mark.parametrize("url, ok", [("sqlite:///data/sales.db", True), ("postgresql+psycopg://u:p@h:5432/db", True),
                                     ("postgresql://[::1]:5432/db", True), ("sqlite://", True),
                                     ("postgresql://h:port/db", False), ("postgresql://h:99999/db", False),
                                     ("://h/db", False), ("sales.db", False)])
def test_database_urls_have_the_shape_sqlalchemy_parses(url: str, ok: bool) -> None:
    result = compile_source(MODEL.replace('"sqlite:///x.db"', f'"{url}"'), "t")
    assert codes(result) == ([] if ok else ["CX201"])
