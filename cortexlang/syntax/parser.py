"""Source text -> :class:`~cortexlang.syntax.ast.Module`, or syntax diagnostics.

The Lark LALR parser builds the AST directly (the transformer runs inline, so no
intermediate parse tree is allocated). Lark's exceptions never escape: they are
turned into CX0xx diagnostics with a human description of what was expected.
"""

from __future__ import annotations

import ast as pyast
import os
import re
import threading

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cortexlang.diagnostics import DiagnosticCollector, Span
from cortexlang.syntax import ast
from grammar import GRAMMAR_PATH

RESERVED = {"flow", "on", "loop", "max", "then", "within", "else", "done", "fail", "true", "false"}

_QUANTITY = re.compile(r"^([0-9][0-9_]*(?:\.[0-9]+)?)([A-Za-z%]*)(?:/([A-Za-z]+))?$")
_MONEY = re.compile(r"^\$([0-9][0-9_]*(?:\.[0-9]+)?)(?:/([A-Za-z]+))?$")

# What each terminal looks like to a user, for "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string", "QUANTITY": "a number",
    "MONEY": "an amount like `$3.50/h`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`",
    "RSQB": "`]`", "LPAR": "`(`", "RPAR": "`)`", "COMMA": "`,`", "EQUAL": "`=`", "DOT": "`.`",
    "VBAR": "`|`", "AT": "`@`", "ARROW": "`->`", "DOTDOT": "`..`", "FLOW": "`flow`",
    "ON": "`on`", "ELSE": "`else`", "DONE": "`done`", "FAIL": "`fail`", "LOOP": "`loop`",
    "MAX": "`max`", "THEN": "`then`", "WITHIN": "`within`", "TRUE": "`true`", "FALSE": "`false`",
    "$END": "end of file",
}


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
        return ast.Block(
            type=str(type_tok), type_span=_span(type_tok),
            label=label, label_span=_span(label_tok) if label_tok is not None else None,
            label_quoted=label_tok is not None and label_tok.type == "STRING",
            members=members, span=_join(_span(type_tok), _span(close)),
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
        return ast.Flow(stmts, _join(_span(c[0]), _span(c[-1])))

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
        self._lark = Lark(
            GRAMMAR_PATH.read_text(), parser="lalr", lexer="contextual", cache=_table_cache(),
            transformer=_Builder(), maybe_placeholders=True,
            lexer_callbacks={"COMMENT": self._comments.append},
        )

    def parse(self, source: str) -> tuple[tuple[ast.Block, ...], list[Token]]:
        with self._lock:
            self._comments.clear()
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


MAX_SYNTAX_ERRORS = 20


def parse(source: str, path: str, diags: DiagnosticCollector) -> ast.Module | None:
    """Parse ``source``; on syntax errors, report them to ``diags`` and return None.

    Recovery, to report independent syntax errors in one run: the innermost
    ``{ ... }`` block around an error (with its header line) is blanked out with
    spaces, which keeps every position, and the rest is parsed again. Errors
    are therefore reported at most one per block and never cascade; no AST is
    returned once the file has a syntax error.
    """
    try:
        blocks, comments = _parser().parse(source)
    except UnexpectedInput as exc:
        _report(exc, source, diags)
        _recover(source, exc, diags)
        return None
    return ast.Module(
        path=path, source=source, blocks=blocks,
        comments=tuple(ast.Comment(str(t), t.line, t.column) for t in comments),
    )


# ----------------------------------------------------------------- syntax errors


def _recover(source: str, exc: UnexpectedInput, diags: DiagnosticCollector) -> None:
    """Report further syntax errors, blanking the block around each one (see :func:`parse`)."""
    text = source
    for _ in range(MAX_SYNTAX_ERRORS - 1):
        region = _error_region(text, exc)
        if region is None:
            return
        start, end = region
        text = text[:start] + "".join(c if c == "\n" else " " for c in text[start:end]) + text[end:]
        try:
            _parser().parse(text)
            return
        except UnexpectedInput as nxt:
            if _error_offset(nxt) is not None and _error_offset(nxt) < end and _error_offset(nxt) >= start:
                return  # no progress: stop rather than loop
            _report(nxt, source, diags)  # rendered against the original text: same positions
            exc = nxt


def _error_offset(exc: UnexpectedInput) -> int | None:
    if isinstance(exc, UnexpectedToken):
        return None if exc.token.type == "$END" else exc.token.start_pos
    if isinstance(exc, UnexpectedCharacters):
        return exc.pos_in_stream
    return None


def _error_region(text: str, exc: UnexpectedInput) -> tuple[int, int] | None:
    """Offsets [start, end) of the innermost closed block containing the error, header included."""
    pos = _error_offset(exc)
    if pos is None:
        return None
    best = None
    for open_at, close_at in _brace_pairs(text):
        if open_at < pos <= close_at and (best is None or open_at > best[0]):
            best = (open_at, close_at)
    if best is None:
        return None
    # The header (`llm name`, `on x`, `flow`) starts after the nearest `{`, `}` or line break.
    boundary = max(text.rfind(c, 0, best[0]) for c in "{}\n") + 1
    header = text[boundary:best[0]]
    return boundary + len(header) - len(header.lstrip()), best[1] + 1


def _brace_pairs(text: str) -> list[tuple[int, int]]:
    """Matched ``{``/``}`` offsets, skipping strings and comments."""
    pairs, stack, i, n = [], [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if ch == '"':
            if text.startswith('"""', i):
                end = text.find('"""', i + 3)
                i = n if end < 0 else end + 3
            else:
                end = i + 1
                while end < n and text[end] not in '"\n':
                    end += 2 if text[end] == "\\" else 1
                i = end + 1
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs.append((stack.pop(), i))
        i += 1
    return pairs


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(e, f"`{e.lower()}`") for e in expected})
    if len(names) > 6:
        names = names[:6] + ["…"]
    return ", ".join(names)


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    return f"`{text if len(text) <= 30 else text[:27] + '...'}`"


def _unclosed_brace(source: str) -> tuple[int, int] | None:
    """(line, col) of the innermost `{` left open, skipping strings and comments."""
    stack: list[tuple[int, int]] = []
    line, col, i, n = 1, 1, 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            while i < n and source[i] != "\n":
                i += 1
            continue
        if ch == '"':
            end = source.find('"""', i + 3) + 3 if source.startswith('"""', i) else source.find('"', i + 1) + 1
            end = n if end <= 0 else end
            chunk = source[i:end]
            newlines = chunk.count("\n")
            line, col = (line + newlines, len(chunk) - chunk.rfind("\n")) if newlines else (line, col + len(chunk))
            i = end
            continue
        if ch == "{":
            stack.append((line, col))
        elif ch == "}" and stack:
            stack.pop()
        line, col = (line + 1, 1) if ch == "\n" else (line, col + 1)
        i += 1
    return stack[-1] if stack else None


def _report(exc: UnexpectedInput, source: str, diags: DiagnosticCollector) -> None:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = source.splitlines() or [""]
        line = len(lines)
        col = len(lines[-1]) + 1
        opened = _unclosed_brace(source)
        if opened is not None:
            diags.error("CX002", "unexpected end of file: a `{` is never closed", Span.point(*opened),
                        hint="add the missing `}`")
        else:
            diags.error("CX002", "unexpected end of file; the last statement is incomplete",
                        Span.point(line, col))
        return
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.accepts or exc.expected)
        hint = None
        if str(tok) in RESERVED and "NAME" in expected:
            hint = f"`{tok}` is a reserved word; choose another name"
        elif tok.type == "NAME" and "EQUAL" in expected:
            hint = "attributes are written `name = value`"
        elif tok.type == "NAME" and "__ANON_0" in expected:
            hint = "flow statements are edges: `a -> b`"
        diags.error("CX001", f"unexpected {_token_text(tok)}; expected {_describe_expected(expected)}",
                    _span(tok), hint=hint)
        return
    if isinstance(exc, UnexpectedCharacters):
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else ""
        span = Span.point(exc.line, exc.column)
        if char == '"':
            diags.error("CX004", "unterminated string", span,
                        hint='close it with `"` on the same line, or use `"""` for text over several lines')
        else:
            diags.error("CX003", f"invalid character `{char}`", span)
        return
    diags.error("CX001", str(exc).splitlines()[0], None)  # pragma: no cover - other Lark errors
