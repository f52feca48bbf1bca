"""Source text -> :class:`~cortexlang.syntax.ast.Module`, or syntax diagnostics.

The Lark LALR parser builds the AST directly (the transformer runs inline, so no
intermediate parse tree is allocated). Lark's exceptions never escape: they are
turned into CX0xx diagnostics (:mod:`cortexlang.syntax.errors`), and recovery
(:mod:`cortexlang.syntax.recovery`) edits the text so that one run reports every
independent syntax error and the passes can still check the blocks that parsed.
"""

from __future__ import annotations

import ast as pyast
import os
import re
import threading

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput

from cortexlang.diagnostics import DiagnosticCollector, Span
from cortexlang.syntax import ast
from cortexlang.syntax.recovery import PARSE_BUDGET, Recovery, close_unclosed_blocks, recover_from
from grammar import GRAMMAR_PATH

_QUANTITY = re.compile(r"^([0-9][0-9_]*(?:\.[0-9]+)?)([A-Za-z%]*)(?:/([A-Za-z]+))?$")
_MONEY = re.compile(r"^\$([0-9][0-9_]*(?:\.[0-9]+)?)(?:/([A-Za-z]+))?$")


def _span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _join(a: Span, b: Span) -> Span:
    return Span(a.line, a.col, b.end_line, b.end_col)


def _span_of(x) -> Span:
    return _span(x) if isinstance(x, Token) else x.span


def _quantity(tok: Token) -> ast.Quantity:
    m = _QUANTITY.match(str(tok))
    assert m, tok  # the lexer only produces matching tokens
    return ast.Quantity(float(m.group(1).replace("_", "")), m.group(2), m.group(3) or "", str(tok), _span(tok))


def _unquote(raw: str) -> str:
    if "\\" not in raw:
        return raw[1:-1]  # the common case, and fast
    # With escapes: the STRING terminal admits exactly the escapes Python string literals do.
    try:
        return pyast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw[1:-1]


class _Builder(Transformer):
    """Builds AST nodes bottom-up while the LALR parser reduces."""

    stubs: frozenset[int] = frozenset()  # offsets of `{` whose block contents recovery blanked

    # -- structure
    def start(self, children):
        return tuple(children)

    def block(self, c):
        type_tok = c[0]
        label_tok = c[1] if len(c) > 1 and isinstance(c[1], Token) and c[1].type in ("NAME", "STRING") else None
        first_member = 2 if label_tok is not None else 1
        members = tuple(m for m in c[first_member:] if not isinstance(m, Token))
        close = c[-1]
        label = None
        if label_tok is not None:
            label = _unquote(str(label_tok)) if label_tok.type == "STRING" else str(label_tok)
        opened = next(t for t in c if isinstance(t, Token) and t.type == "LBRACE")
        return ast.Block(
            type=str(type_tok), type_span=_span(type_tok),
            label=label, label_span=_span(label_tok) if label_tok is not None else None,
            label_quoted=label_tok is not None and label_tok.type == "STRING",
            members=members, span=_join(_span(type_tok), _span(close)),
            recovered=opened.start_pos in self.stubs,
        )

    def attribute(self, c):
        name, value = c
        return ast.Attribute(str(name), _span(name), value, _join(_span(name), value.span))

    # -- expressions
    def choice(self, c):
        options = tuple(x if isinstance(x, ast.Alternative) else ast.Alternative(x, None, x.span) for x in c)
        return ast.Choice(options, _join(options[0].span, options[-1].span))

    def weighted(self, c):
        value, q = c
        return ast.Alternative(value, _quantity(q), _join(value.span, _span(q)))

    def string(self, c):
        (tok,) = c
        return ast.Str(_unquote(str(tok)), str(tok), _span(tok))

    def long_string(self, c):
        (tok,) = c
        return ast.Str(str(tok)[3:-3], str(tok), _span(tok))

    def quantity(self, c):
        return _quantity(c[0])

    def money(self, c):
        (tok,) = c
        m = _MONEY.match(str(tok))
        assert m, tok
        return ast.Money(float(m.group(1).replace("_", "")), m.group(2) or "", str(tok), _span(tok))

    def range(self, c):
        lo, hi = _quantity(c[0]), _quantity(c[2])
        return ast.Range(lo, hi, _join(lo.span, hi.span))

    def ref(self, c):
        return ast.Ref(tuple(str(t) for t in c), _join(_span(c[0]), _span(c[-1])))

    def call(self, c):
        name, *args = c
        args = tuple(a for a in args if a is not None)
        end = args[-1].span if args else _span(name)
        return ast.Call(str(name), args, _join(_span(name), end))

    def list(self, c):
        items = tuple(x for x in c if x is not None and not isinstance(x, Token))
        return ast.ListExpr(items, _join(_span(c[0]), _span(c[-1])))

    def true(self, c):
        return ast.Bool(True, _span(c[0]))

    def false(self, c):
        return ast.Bool(False, _span(c[0]))

    # -- flow
    def flow(self, c):
        stmts = tuple(x for x in c if not isinstance(x, Token))
        opened, closed = c[1].start_pos, c[-1].start_pos
        recovered = any(opened <= s < closed for s in self.stubs)  # the flow's own `{` or an `on` block's
        return ast.Flow(stmts, _join(_span(c[0]), _span(c[-1])), recovered=recovered)

    def node(self, c):
        (tok,) = c
        return ast.NodeRef(str(tok), _span(tok))

    def chain(self, c):
        loop = c[-1] if isinstance(c[-1], ast.LoopClause) else None
        nodes = tuple(x for x in c if isinstance(x, ast.NodeRef))  # ARROW tokens dropped
        end = loop.span if loop else nodes[-1].span
        return ast.Chain(nodes, loop, _join(nodes[0].span, end))

    def on_block(self, c):
        toks = [x for x in c if isinstance(x, Token) and x.type == "NAME"]
        subject = toks[0]
        field = toks[1] if len(toks) > 1 else None
        cases = tuple(x for x in c if isinstance(x, ast.Case))
        subj_span = _join(_span(subject), _span(field)) if field is not None else _span(subject)
        return ast.OnBlock(str(subject), str(field) if field is not None else None, subj_span, cases,
                           _join(_span(c[0]), _span(c[-1])))

    def case(self, c):
        labels = c[0]
        prob = next((x for x in c[1:] if isinstance(x, ast.Quantity)), None)
        target = next(x for x in c[1:] if isinstance(x, ast.NodeRef))  # after the ARROW token
        loop = c[-1] if isinstance(c[-1], ast.LoopClause) else None
        end = loop.span if loop else target.span
        return ast.Case(labels, prob, target, loop, _join(labels[0].span, end))

    def case_labels(self, c):
        return tuple(c)

    def case_label(self, c):
        (tok,) = c
        quoted = tok.type == "STRING"
        return ast.CaseLabel(_unquote(str(tok)) if quoted else str(tok), quoted, _span(tok))

    def probability(self, c):
        return _quantity(c[0])

    def loop_clause(self, c):
        name = c[0]
        parts: dict[str, object] = {}
        repeated = []
        end = _span(name)
        for kind, value in c[1:]:  # the parts may come in any order
            if kind in parts:
                repeated.append(kind)
            parts[kind] = value
            end = _span_of(value)
        within = parts.get("within")
        return ast.LoopClause(str(name), _span(name), parts.get("max"), parts.get("then"),
                              str(within) if within is not None else None,
                              _span(within) if within is not None else None, _join(_span(name), end),
                              tuple(repeated))

    def loop_max(self, c):
        return ("max", c[0])

    def loop_then(self, c):
        return ("then", c[0])

    def loop_within(self, c):
        return ("within", c[0])


def _table_cache() -> str | bool:
    """A file in the user's own cache folder for Lark's LALR tables, or False when none can be made.

    Building the tables takes ~150 ms, loading them ~3 ms: most of `cortexc check`'s start-up.
    Lark stores a hash of the grammar and options in the file and rebuilds it when they change.
    The folder is private (0700) because Lark unpickles the file.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "cortexlang")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.path.join(folder, "grammar.lark-cache") if os.access(folder, os.W_OK) else False


class _Parser:
    """One Lark instance per process; comments are collected per call under a lock."""

    def __init__(self) -> None:
        self._comments: list[Token] = []
        self._lock = threading.Lock()
        self._builder = _Builder()
        self._lark = Lark(
            GRAMMAR_PATH.read_text(), parser="lalr", lexer="contextual", cache=_table_cache(),
            transformer=self._builder, maybe_placeholders=True,
            lexer_callbacks={"COMMENT": self._comments.append},
        )

    def parse(self, source: str, stubs: frozenset[int] = frozenset()) -> tuple[tuple[ast.Block, ...], list[Token]]:
        """Raises Lark's UnexpectedInput; ``stubs`` are the offsets of `{` of blocks emptied by recovery."""
        with self._lock:
            self._comments.clear()
            self._builder.stubs = stubs
            try:
                blocks = self._lark.parse(source)
            finally:
                comments = list(self._comments)
            return blocks, comments

    def terminal_pattern(self, name: str) -> str | None:
        for t in self._lark.terminals:
            if t.name == name:
                return t.pattern.value if hasattr(t.pattern, "value") else None
        return None


_PARSER: _Parser | None = None


def _parser() -> _Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = _Parser()
    return _PARSER


def parse(source: str, path: str, diags: DiagnosticCollector, *, recover: bool = False) -> ast.Module | None:
    """Parse ``source``, reporting syntax errors to ``diags``.

    Without ``recover``: the module, or None when the file has any syntax error
    (what ``cortexc fmt`` needs). With ``recover``: also a module when every error
    could be recovered from; blocks whose contents were dropped are marked
    ``recovered`` (see :mod:`cortexlang.syntax.recovery`) and ``Module.recovered``
    is set. None when the file is too broken to check further.
    """
    state = Recovery(source)
    if not close_unclosed_blocks(state, diags):
        return None
    parsed, budget = None, PARSE_BUDGET
    while parsed is None:
        budget -= len(state.text)
        try:
            parsed = _parser().parse(state.text, frozenset(state.stubs))
        except UnexpectedInput as exc:
            if not recover_from(exc, state, diags) or budget < len(state.text):
                return None
    if state.errors and (not recover or not state.complete):
        return None
    blocks, comments = parsed
    return ast.Module(
        path=path, source=source, blocks=blocks,
        comments=tuple(ast.Comment(str(t), t.line, t.column) for t in comments),
        recovered=state.errors > 0,
    )
