"""The parser: AST shapes, spans, comments, and syntax diagnostics."""

from __future__ import annotations

from cortexlang.diagnostics import DiagnosticCollector, Span
from cortexlang.syntax import ast
from cortexlang.syntax.parser import parse


def _parse(src: str):
    diags = DiagnosticCollector("t.cortex", src)
    return parse(src, "t.cortex", diags), diags


def test_blocks_attributes_and_spans() -> None:
    module, diags = _parse('model m {\n  params = 7.6B  # big\n}\n')
    assert not diags.items
    block = module.blocks[0]
    assert (block.type, block.label) == ("model", "m")
    attr = block.members[0]
    assert isinstance(attr.value, ast.Quantity)
    assert (attr.value.number, attr.value.unit, attr.value.raw) == (7.6, "B", "7.6B")
    assert attr.name_span == Span(2, 3, 2, 9)
    assert module.comments == (ast.Comment("# big", 2, 18),)


def test_expressions() -> None:
    module, _ = _parse('x { a = [1, "s", n.f]  b = m1 | m2 @ 90%  c = 1..3  d = file("p")  e = true  f = $2/h  g = """t\nu""" }')
    vals = {a.name: a.value for a in module.blocks[0].members}
    assert [type(i) for i in vals["a"].items] == [ast.Quantity, ast.Str, ast.Ref]
    assert vals["a"].items[2].parts == ("n", "f")
    assert isinstance(vals["b"], ast.Choice) and vals["b"].options[1].quality.number == 90
    assert (vals["c"].lo.number, vals["c"].hi.number) == (1, 3)
    assert vals["d"].name == "file" and vals["d"].args[0].value == "p"
    assert vals["e"].value is True
    assert (vals["f"].amount, vals["f"].per) == (2.0, "h")
    assert vals["g"].value == "t\nu"


def test_flow_statements() -> None:
    module, diags = _parse('workflow w { flow {\n a -> b -> c loop l max 2 then done within o\n on c.f { "x" | y (30%) -> a  else -> fail }\n} }')
    assert not diags.items
    chain, on = module.blocks[0].members[0].statements
    assert [n.name for n in chain.nodes] == ["a", "b", "c"]
    assert (chain.loop.name, chain.loop.then.name, chain.loop.within) == ("l", "done", "o")
    assert (on.subject, on.field) == ("c", "f")
    first, second = on.cases
    assert [(lab.text, lab.quoted) for lab in first.labels] == [("x", True), ("y", False)]
    assert first.probability.number == 30 and second.labels[0].is_else


def test_loop_clause_parts_in_any_order() -> None:
    module, diags = _parse("workflow w { flow { a -> b loop l within o then done max 2 } }")
    assert not diags.items
    clause = module.blocks[0].members[0].statements[0].loop
    assert (clause.within, clause.then.name, clause.max.number) == ("o", "done", 2)


def test_syntax_errors_become_diagnostics() -> None:
    cases = {
        "x { a = }": "CX001",
        "x { a = 1 ": "CX002",
        "x { a ! 1 }": "CX003",
        'x { a = "abc }': "CX004",
    }
    for src, code in cases.items():
        module, diags = _parse(src)
        assert module is None
        assert [d.code for d in diags.items] == [code], src


def test_reserved_word_hint() -> None:
    _, diags = _parse("x { a = 1  then = 2 }")
    (d,) = diags.items
    assert d.code == "CX001" and "reserved" in (d.hint or "")


def test_recovery_reports_independent_syntax_errors_once_each() -> None:
    src = 'a {\n  x = 1 ]\n}\nb {\n  y =\n}\nc { flow { p -> q  on q { ok -> done  error fail } } }\n'
    module, diags = _parse(src)
    assert module is None
    assert [(d.code, d.span.line) for d in diags.items] == [("CX001", 2), ("CX001", 6), ("CX001", 7)]


def test_an_unclosed_block_does_not_stop_recovery() -> None:
    _, diags = _parse("a {\n  x = ]\n}\nb {\n  y = 1\n")
    assert [(d.code, d.span.line) for d in diags.sorted()] == [("CX001", 2), ("CX002", 4)]
