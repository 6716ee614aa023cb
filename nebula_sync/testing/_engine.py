"""The fake graphd's statement engine: a tiny nGQL subset evaluated on ``ttypes.Value``.

Supported statements (keywords are case-insensitive, statements are separated by ``;``)::

    USE <space>                              switch the session's space
    SHOW SPACES                              one column "Name", one row per space
    RETURN <expr> [AS <alias>], ...          one row
    YIELD  <expr> [AS <alias>], ...          one row

Expressions: integer (decimal, ``0x`` hex), float, string (``"..."`` or ``'...'`` with backslash
escapes), ``true``/``false``, ``NULL``, lists ``[a, b]``, maps ``{k: v}``, sets ``{a, b}``,
``$param``, ``+ - * / %`` with the usual precedence and parentheses, unary ``-``/``+``, comparisons
(``== != <> < <= > >=``) and ``AND OR XOR NOT``. Arithmetic follows graphd's ``Value`` operators:
NULL propagates, integer overflow gives ``NULL`` of kind ``ERR_OVERFLOW``, division or modulo by
integer zero gives ``DIV_BY_ZERO``, a type mismatch gives ``BAD_TYPE``; integer division truncates
toward zero and ``%`` takes the sign of the dividend, as in C++. ``+`` concatenates strings (and a
string with a number or boolean) and appends to lists. A column without ``AS`` is named after the
expression's text as written.

Errors carry graphd's codes: a parse error is ``E_SYNTAX_ERROR`` (``SyntaxError: syntax error near
`tok'``), an undefined ``$param`` is ``E_SEMANTIC_ERROR``, an unknown space is
``E_EXECUTION_ERROR`` (``SpaceNotFound: SpaceName `x'``), nothing to run is ``E_STATEMENT_EMPTY``.
An integer literal beyond int64 is ``E_SYNTAX_ERROR`` (``Out of range``), as in graphd's lexer.
Parentheses, lists, maps, sets and unary operators nest at most ``MAX_NESTING`` levels deep;
deeper nesting is ``E_SYNTAX_ERROR`` too (the parser is recursive; graphd's is not). A result
nested deeper than thrift's binary codec goes (64 structs: lists about 30 deep) cannot be sent; the
server answers such a request with a ``TApplicationException`` (``INTERNAL_ERROR``).

Everything here is pure (no shared state), so it is thread-safe.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Callable, Optional, Union

import attrs

from nebula_sync._params import RESERVED_WORDS
from nebula_sync._thrift import ttypes
from nebula_sync._thrift.ttypes import NullType, Value

#: words graphd's parser refuses as a bare space or column name: the reserved words the client
#: quotes, less those that graphd 3.x's grammar lists as unreserved or not at all (the client
#: quotes them anyway, to be safe) and the join words of newer grammars
_REJECTED_NAMES = RESERVED_WORDS - frozenset(
    "LIMIT OFFSET FORMAT PROFILE PATH GETDATE REPLACE ACROSS RESTART JOIN LEFT RIGHT INNER OUTER SEMI "
    "ANTI".split()
)

__all__ = [
    "E_EXECUTION_ERROR",
    "E_SEMANTIC_ERROR",
    "E_STATEMENT_EMPTY",
    "E_SYNTAX_ERROR",
    "MAX_NESTING",
    "EngineError",
    "Statement",
    "StatementResult",
    "parse_request",
    "parse_statements",
    "run_statement",
]

E_SYNTAX_ERROR = -1004
E_EXECUTION_ERROR = -1005
E_STATEMENT_EMPTY = -1006
E_SEMANTIC_ERROR = -1009

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# The value of a decimal literal too long to be an int64 (never converted: Python's int() refuses
# more than 4300 digits). Anything above _I64_MAX + 1 gives the same "Out of range" error.
_TOO_BIG = 2**64
_INT64_DIGITS = 19

#: how deep expressions may nest; each level costs the parser about ten Python frames, so this
#: keeps a parse well inside Python's default recursion limit (1000)
MAX_NESTING = 64


class EngineError(Exception):
    """A statement failed; ``code`` is the graphd error code, ``message`` graphd's text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _syntax_error(near: str) -> EngineError:
    return EngineError(E_SYNTAX_ERROR, f"SyntaxError: syntax error near `{near}'")


# ---- lexer -----------------------------------------------------------------------------------


@attrs.frozen
class _Token:
    kind: str  # "int", "float", "str", "ident", "bquote", "param", "op", "eof"
    text: str  # the source text of the token
    start: int
    end: int
    value: object = None  # decoded literal (int, float, bytes) or identifier name


_OPS = ("==", "!=", "<>", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ":", "+", "-", "*", "/",
        "%", "<", ">", ";", ".")  # fmt: skip
# ASCII digits only, as graphd's lexer: "\d" and str.isdigit() also take other scripts' digits ("²")
_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'", '"': '"',
            "/": "/", "0": "\0"}  # fmt: skip


def _read_string(text: str, pos: int) -> tuple[str, int]:
    """Decode the quoted string starting at ``text[pos]``; returns (value, end position)."""
    quote = text[pos]
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6] or ""):
                code = int(text[i + 2 : i + 6], 16)
                i += 6
                # a UTF-16 surrogate pair (as JSON writes characters beyond U+FFFF) is one character
                low = text[i + 2 : i + 6] if 0xD800 <= code < 0xDC00 and text.startswith("\\u", i) else ""
                if re.fullmatch(r"[dD][c-fC-F][0-9a-fA-F]{2}", low):
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                    i += 6
                out.append(chr(code))
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise _syntax_error(text[pos:].strip()[:20] or text[pos])


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _syntax_error(text[i : i + 20])
            i = end + 2
            continue
        if ch in "\"'":
            value, end = _read_string(text, i)
            try:
                encoded = value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (``"\ud800"``): no UTF-8 string holds it
                raise _syntax_error(text[i:end]) from None
            tokens.append(_Token("str", text[i:end], i, end, encoded))
            i = end
            continue
        if ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _syntax_error(text[i : i + 20])
            tokens.append(_Token("bquote", text[i : end + 1], i, end + 1, text[i + 1 : end]))
            i = end + 1
            continue
        if ch == "$":
            m = _IDENT.match(text, i + 1)
            if not m:
                raise _syntax_error("$")
            tokens.append(_Token("param", m.group(), i, m.end(), m.group()))
            i = m.end()
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER.match(text, i)
            assert m is not None
            lit = m.group()
            if m.end() < n and (text[m.end()].isalnum() or text[m.end()] == "_"):
                bad = re.match(r"\w+", text[i:])
                raise _syntax_error(bad.group() if bad else lit)
            if lit[:2] in ("0x", "0X"):
                tokens.append(_Token("int", lit, i, m.end(), int(lit, 16)))
            elif any(c in lit for c in ".eE"):
                tokens.append(_Token("float", lit, i, m.end(), float(lit)))
            elif len(lit.lstrip("0")) > _INT64_DIGITS:
                tokens.append(_Token("int", lit, i, m.end(), _TOO_BIG))
            else:
                tokens.append(_Token("int", lit, i, m.end(), int(lit)))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            tokens.append(_Token("ident", m.group(), i, m.end(), m.group()))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(_Token("op", op, i, i + len(op)))
                i += len(op)
                break
        else:
            raise _syntax_error(ch)
    tokens.append(_Token("eof", "", n, n))
    return tokens


# ---- AST -------------------------------------------------------------------------------------


@attrs.frozen
class _Literal:
    value: Value


@attrs.frozen
class _Param:
    name: str


@attrs.frozen
class _Unary:
    op: str
    operand: _Expr


@attrs.frozen
class _Binary:
    op: str
    left: _Expr
    right: _Expr


@attrs.frozen
class _ListExpr:
    items: tuple[_Expr, ...]


@attrs.frozen
class _SetExpr:
    items: tuple[_Expr, ...]


@attrs.frozen
class _MapExpr:
    items: tuple[tuple[str, _Expr], ...]


_Expr = Union[_Literal, _Param, _Unary, _Binary, _ListExpr, _SetExpr, _MapExpr]


def _children(expr: _Expr) -> tuple[_Expr, ...]:
    """The direct subexpressions of ``expr``, in evaluation order."""
    if isinstance(expr, _Unary):
        return (expr.operand,)
    if isinstance(expr, _Binary):
        return (expr.left, expr.right)
    if isinstance(expr, (_ListExpr, _SetExpr)):
        return expr.items
    if isinstance(expr, _MapExpr):
        return tuple(item for _, item in expr.items)
    return ()


@attrs.frozen
class _Column:
    expr: _Expr
    name: str


@attrs.frozen
class Statement:
    """One parsed statement. ``text`` is its source (stripped), ``kind`` one of ``use``,
    ``show_spaces``, ``return``; ``space`` for ``use``; ``columns`` for ``return``."""

    text: str
    kind: str
    space: str = ""
    columns: tuple[_Column, ...] = ()

    def parameters(self) -> set[str]:
        """Names of the ``$parameters`` this statement refers to."""
        found: set[str] = set()
        todo: list[_Expr] = [col.expr for col in self.columns]
        while todo:  # a loop, not recursion: "1 + 1 + ... + 1" is as deep as it is long
            e = todo.pop()
            if isinstance(e, _Param):
                found.add(e.name)
            else:
                todo.extend(_children(e))
        return found


# ---- parser ----------------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser over one statement's tokens (the ``eof`` token ends them)."""

    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.pos = 0
        self.depth = 0  # nesting levels open (brackets and unary operators)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def error(self) -> EngineError:
        tok = self.peek()
        if tok.kind == "eof":
            prev = self.tokens[self.pos - 1] if self.pos > 0 else tok
            return _syntax_error(prev.text)
        return _syntax_error(tok.text)

    def enter(self, tok: _Token) -> None:
        """Open one nesting level at ``tok``; leave it with ``self.depth -= 1``."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise EngineError(E_SYNTAX_ERROR, f"SyntaxError: Nested more than {MAX_NESTING} levels deep: "
                                              f"near `{tok.text}'")  # fmt: skip

    def is_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "ident" and tok.text.upper() in words

    def is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def expect_op(self, op: str) -> _Token:
        if not self.is_op(op):
            raise self.error()
        return self.next()

    def name(self) -> str:
        tok = self.peek()
        if tok.kind == "bquote" or (tok.kind == "ident" and tok.text.upper() not in _REJECTED_NAMES):
            self.next()
            return str(tok.value)
        raise self.error()

    def statement(self, text: str) -> Statement:
        if self.is_keyword("USE"):
            self.next()
            space = self.name()
            self.end()
            return Statement(text, "use", space=space)
        if self.is_keyword("SHOW"):
            self.next()
            if not self.is_keyword("SPACES"):
                raise self.error()
            self.next()
            self.end()
            return Statement(text, "show_spaces")
        if self.is_keyword("RETURN", "YIELD"):
            self.next()
            columns = [self.column()]
            while self.is_op(","):
                self.next()
                columns.append(self.column())
            self.end()
            return Statement(text, "return", columns=tuple(columns))
        raise self.error()

    def end(self) -> None:
        if self.peek().kind != "eof":
            raise self.error()

    def column(self) -> _Column:
        start = self.peek().start
        expr = self.expr()
        end = self.tokens[self.pos - 1].end
        name = self.source[start:end]
        if self.is_keyword("AS"):
            self.next()
            name = self.name()
        return _Column(expr, name)

    # precedence, lowest first: OR, XOR, AND, NOT, comparison, + -, * / %, unary, primary
    def expr(self) -> _Expr:
        left = self.xor_expr()
        while self.is_keyword("OR"):
            self.next()
            left = _Binary("OR", left, self.xor_expr())
        return left

    def xor_expr(self) -> _Expr:
        left = self.and_expr()
        while self.is_keyword("XOR"):
            self.next()
            left = _Binary("XOR", left, self.and_expr())
        return left

    def and_expr(self) -> _Expr:
        left = self.not_expr()
        while self.is_keyword("AND"):
            self.next()
            left = _Binary("AND", left, self.not_expr())
        return left

    def not_expr(self) -> _Expr:
        if self.is_keyword("NOT"):
            self.enter(self.next())
            operand = self.not_expr()
            self.depth -= 1
            return _Unary("NOT", operand)
        return self.comparison()

    def comparison(self) -> _Expr:
        left = self.additive()
        while self.is_op("==", "!=", "<>", "<", "<=", ">", ">="):
            op = self.next().text
            left = _Binary("!=" if op == "<>" else op, left, self.additive())
        return left

    def additive(self) -> _Expr:
        left = self.multiplicative()
        while self.is_op("+", "-"):
            op = self.next().text
            left = _Binary(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> _Expr:
        left = self.unary()
        while self.is_op("*", "/", "%"):
            op = self.next().text
            left = _Binary(op, left, self.unary())
        return left

    def unary(self) -> _Expr:
        if not self.is_op("-", "+"):
            return self.primary()
        op = self.next()
        tok = self.peek()
        # "-9223372036854775808" is a valid literal although its magnitude is not
        if op.text == "-" and tok.kind == "int" and tok.value == -_I64_MIN:
            self.next()
            return _Literal(Value(iVal=_I64_MIN))
        self.enter(op)
        operand = self.unary()
        self.depth -= 1
        return _Unary(op.text, operand)

    def primary(self) -> _Expr:
        tok = self.peek()
        if tok.kind == "int":
            self.next()
            assert isinstance(tok.value, int)
            if tok.value > _I64_MAX:
                raise EngineError(E_SYNTAX_ERROR, f"SyntaxError: Out of range: near `{tok.text}'")
            return _Literal(Value(iVal=tok.value))
        if tok.kind == "float":
            self.next()
            assert isinstance(tok.value, float)
            return _Literal(Value(fVal=tok.value))
        if tok.kind == "str":
            self.next()
            assert isinstance(tok.value, bytes)
            return _Literal(Value(sVal=tok.value))
        if tok.kind == "param":
            self.next()
            return _Param(str(tok.value))
        if tok.kind == "ident":
            word = tok.text.upper()
            if word in ("TRUE", "FALSE"):
                self.next()
                return _Literal(Value(bVal=word == "TRUE"))
            if word == "NULL":
                self.next()
                return _Literal(Value(nVal=NullType.__NULL__))
            raise self.error()
        if self.is_op("(", "[", "{"):
            self.enter(tok)
            inner = self.bracketed()
            self.depth -= 1
            return inner
        raise self.error()

    def bracketed(self) -> _Expr:
        """A parenthesised expression, a list, a map or a set (the next token opens it)."""
        if self.is_op("("):
            self.next()
            inner = self.expr()
            self.expect_op(")")
            return inner
        if self.is_op("["):
            self.next()
            items: list[_Expr] = []
            if not self.is_op("]"):
                items.append(self.expr())
                while self.is_op(","):
                    self.next()
                    items.append(self.expr())
            self.expect_op("]")
            return _ListExpr(tuple(items))
        return self.map_or_set()

    def map_or_set(self) -> _Expr:
        self.expect_op("{")
        if self.is_op("}"):
            self.next()
            return _MapExpr(())
        # a map starts with `key :`; anything else is a set literal
        first = self.peek()
        second = first if first.kind == "eof" else self.tokens[self.pos + 1]  # eof is the last token
        if first.kind in ("ident", "bquote", "str") and second.kind == "op" and second.text == ":":
            entries: list[tuple[str, _Expr]] = []
            while True:
                key_tok = self.next()
                if key_tok.kind not in ("ident", "bquote", "str"):
                    self.pos -= 1
                    raise self.error()
                key = (key_tok.value.decode("utf-8") if isinstance(key_tok.value, bytes)
                       else str(key_tok.value))  # fmt: skip
                self.expect_op(":")
                entries.append((key, self.expr()))
                if not self.is_op(","):
                    break
                self.next()
            self.expect_op("}")
            return _MapExpr(tuple(entries))
        items = [self.expr()]
        while self.is_op(","):
            self.next()
            items.append(self.expr())
        self.expect_op("}")
        return _SetExpr(tuple(items))


def parse_statements(text: str) -> list[tuple[str, list[_Token]]]:
    """Split ``text`` into statements at top-level ``;`` (not inside quotes or comments).

    Returns ``(statement text, tokens)`` pairs, skipping empty statements. Raises
    :class:`EngineError` (syntax error) for an unterminated string or comment.
    """
    tokens = _tokenize(text)
    parts: list[tuple[str, list[_Token]]] = []
    current: list[_Token] = []
    for tok in tokens:
        if tok.kind == "eof" or (tok.kind == "op" and tok.text == ";"):
            if current:
                src = text[current[0].start : current[-1].end]
                parts.append((src, [*current, _Token("eof", "", current[-1].end, current[-1].end)]))
            current = []
        else:
            current.append(tok)
    return parts


def parse_statement(text: str, tokens: list[_Token]) -> Statement:
    """Parse one statement (as returned by :func:`parse_statements`)."""
    if not tokens or tokens[0].kind == "eof":
        raise EngineError(E_STATEMENT_EMPTY, "StatementEmpty: ")
    # token offsets index the whole request; re-base them on this statement's text
    base = tokens[0].start
    rebased = [attrs.evolve(t, start=t.start - base, end=t.end - base) for t in tokens]
    try:
        return _Parser(text, rebased).statement(text)
    except RecursionError:  # only if the caller's own stack is already deep: MAX_NESTING bounds ours
        raise EngineError(E_SYNTAX_ERROR, f"SyntaxError: Nested too deeply: near `{text[:20]}'") from None


@functools.lru_cache(maxsize=4096)
def parse_request(text: str) -> tuple[tuple[str, Union[Statement, EngineError]], ...]:
    """Split and parse a whole request: ``(statement text, Statement or the error parsing it)``.

    Cached: parsing is pure and clients repeat statements. Raises :class:`EngineError` only when
    the request cannot even be split (an unterminated string or comment).
    """
    out: list[tuple[str, Union[Statement, EngineError]]] = []
    for stmt_text, tokens in parse_statements(text):
        try:
            out.append((stmt_text, parse_statement(stmt_text, tokens)))
        except EngineError as exc:
            out.append((stmt_text, exc))
    return tuple(out)


# ---- evaluation ------------------------------------------------------------------------------


@attrs.frozen
class StatementResult:
    """What one statement produced: a result table (or ``None``) and the space afterwards."""

    data: Optional[ttypes.DataSet]
    space: str


def _null(kind: int) -> Value:
    return Value(nVal=kind)


_BAD_TYPE = NullType.BAD_TYPE


def _kind(v: Value) -> str:
    for name in v.__slots__:
        if getattr(v, name) is not None:
            return name
    return "empty"


def _float_text(f: float) -> str:
    """Render a double the way graphd's ``folly::to<std::string>`` does (shortest form)."""
    if math.isfinite(f) and f.is_integer() and abs(f) < 1e21:
        return str(int(f))
    return repr(f)


def _concat_text(v: Value) -> Optional[bytes]:
    """The text a scalar contributes to string concatenation, or ``None`` if it cannot."""
    kind = _kind(v)
    if kind == "sVal":
        return v.sVal
    if kind == "iVal":
        return str(v.iVal).encode()
    if kind == "fVal":
        assert v.fVal is not None
        return _float_text(v.fVal).encode()
    if kind == "bVal":
        return b"true" if v.bVal else b"false"
    return None


def _int_result(n: int) -> Value:
    if n < _I64_MIN or n > _I64_MAX:
        return _null(NullType.ERR_OVERFLOW)
    return Value(iVal=n)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _arith(op: str, a: Value, b: Value) -> Value:
    ka, kb = _kind(a), _kind(b)
    if ka == "nVal":
        return a
    if kb == "nVal":
        return b
    if op == "+":
        if ka == "lVal":
            assert a.lVal is not None
            left = list(a.lVal.values or [])
            if kb == "lVal":
                assert b.lVal is not None
                return Value(lVal=ttypes.NList(values=left + list(b.lVal.values or [])))
            return Value(lVal=ttypes.NList(values=[*left, b]))
        if kb == "lVal":
            assert b.lVal is not None
            return Value(lVal=ttypes.NList(values=[a, *(b.lVal.values or [])]))
        if "sVal" in (ka, kb):
            ta, tb = _concat_text(a), _concat_text(b)
            if ta is None or tb is None:
                return _null(_BAD_TYPE)
            return Value(sVal=ta + tb)
    numeric = ("iVal", "fVal")
    if ka not in numeric or kb not in numeric:
        return _null(_BAD_TYPE)
    x = a.iVal if ka == "iVal" else a.fVal
    y = b.iVal if kb == "iVal" else b.fVal
    assert x is not None and y is not None
    if ka == "iVal" and kb == "iVal":
        assert isinstance(x, int) and isinstance(y, int)
        if op == "+":
            return _int_result(x + y)
        if op == "-":
            return _int_result(x - y)
        if op == "*":
            return _int_result(x * y)
        if y == 0:
            return _null(NullType.DIV_BY_ZERO)
        if op == "/":
            return _int_result(_trunc_div(x, y))
        return Value(iVal=x - y * _trunc_div(x, y))  # C++ %: sign of the dividend
    fx, fy = float(x), float(y)
    try:
        if op == "+":
            return Value(fVal=fx + fy)
        if op == "-":
            return Value(fVal=fx - fy)
        if op == "*":
            return Value(fVal=fx * fy)
        if op == "/":
            if fy == 0.0:
                return Value(fVal=math.copysign(math.inf, fx) * math.copysign(1.0, fy) if fx else math.nan)
            return Value(fVal=fx / fy)
        return Value(fVal=math.fmod(fx, fy) if fy != 0.0 else math.nan)
    except OverflowError:
        return _null(NullType.ERR_OVERFLOW)


def _compare(op: str, a: Value, b: Value) -> Value:
    ka, kb = _kind(a), _kind(b)
    if ka == "nVal" or kb == "nVal":
        return _null(NullType.__NULL__)
    numeric = ("iVal", "fVal")
    if ka in numeric and kb in numeric:
        x: object = a.iVal if ka == "iVal" else a.fVal
        y: object = b.iVal if kb == "iVal" else b.fVal
    elif ka == kb and ka in ("sVal", "bVal"):
        x, y = getattr(a, ka), getattr(b, kb)
    elif op in ("==", "!="):
        same = ka == kb and a == b
        return Value(bVal=same if op == "==" else not same)
    else:
        return _null(_BAD_TYPE)
    ops: dict[str, Callable[[object, object], bool]] = {
        "==": lambda p, q: p == q,
        "!=": lambda p, q: p != q,
        "<": lambda p, q: p < q,  # type: ignore[operator]
        "<=": lambda p, q: p <= q,  # type: ignore[operator]
        ">": lambda p, q: p > q,  # type: ignore[operator]
        ">=": lambda p, q: p >= q,  # type: ignore[operator]
    }
    return Value(bVal=ops[op](x, y))


def _logic(op: str, a: Value, b: Value) -> Value:
    ka, kb = _kind(a), _kind(b)
    if ka == "nVal":
        return a
    if kb == "nVal":
        return b
    if ka != "bVal" or kb != "bVal":
        return _null(_BAD_TYPE)
    x, y = bool(a.bVal), bool(b.bVal)
    if op == "AND":
        return Value(bVal=x and y)
    if op == "OR":
        return Value(bVal=x or y)
    return Value(bVal=x != y)


def _evaluate(expr: _Expr, params: Mapping[str, Value]) -> Value:
    """The value of ``expr``, computed with an explicit stack, not recursion: a chain such as
    ``1 + 1 + ... + 1`` nests as deep as it is long, beyond Python's recursion limit."""
    todo: list[tuple[_Expr, bool]] = [(expr, False)]  # (node, its operands are on ``done``)
    done: list[Value] = []  # values of the subexpressions evaluated so far, in order
    while todo:
        node, ready = todo.pop()
        if isinstance(node, _Literal):
            # a fresh (scalar) Value: parsed statements are cached, results must not share objects
            done.append(Value(**node.value.set_fields()))
            continue
        if isinstance(node, _Param):
            done.append(params[node.name])
            continue
        operands = _children(node)
        if not ready:
            todo.append((node, True))
            todo.extend((child, False) for child in reversed(operands))
            continue
        first = len(done) - len(operands)
        values = done[first:]
        del done[first:]
        done.append(_combine(node, values))
    return done[0]


def _combine(expr: _Expr, values: list[Value]) -> Value:
    """The value of the compound ``expr`` whose operands evaluated to ``values``."""
    if isinstance(expr, _Unary):
        return _unary(expr.op, values[0])
    if isinstance(expr, _Binary):
        left, right = values
        if expr.op in ("+", "-", "*", "/", "%"):
            return _arith(expr.op, left, right)
        if expr.op in ("AND", "OR", "XOR"):
            return _logic(expr.op, left, right)
        return _compare(expr.op, left, right)
    if isinstance(expr, _ListExpr):
        return Value(lVal=ttypes.NList(values=values))
    if isinstance(expr, _SetExpr):
        return Value(uVal=ttypes.NSet(values=set(values)))
    assert isinstance(expr, _MapExpr)
    kvs = {key.encode("utf-8"): value for (key, _), value in zip(expr.items, values)}
    return Value(mVal=ttypes.NMap(kvs=kvs))


def _unary(op: str, v: Value) -> Value:
    kind = _kind(v)
    if kind == "nVal":
        return v
    if op == "NOT":
        return Value(bVal=not v.bVal) if kind == "bVal" else _null(_BAD_TYPE)
    if kind == "iVal":
        assert v.iVal is not None
        return _int_result(-v.iVal if op == "-" else v.iVal)
    if kind == "fVal":
        assert v.fVal is not None
        return Value(fVal=-v.fVal if op == "-" else v.fVal)
    return _null(_BAD_TYPE)


def check_statement(stmt: Statement, params: Mapping[str, Value], space: str,
                    spaces: Sequence[str]) -> str:  # fmt: skip
    """Validate ``stmt`` as graphd's validator would; returns the space after it runs."""
    missing = sorted(stmt.parameters() - set(params))
    if missing:
        raise EngineError(E_SEMANTIC_ERROR, f"SemanticError: Undefined parameters: `${missing[0]}'")
    if stmt.kind == "use":
        if stmt.space not in spaces:
            raise EngineError(E_EXECUTION_ERROR, f"SpaceNotFound: SpaceName `{stmt.space}'")
        return stmt.space
    return space


def run_statement(stmt: Statement, params: Mapping[str, Value], space: str,
                  spaces: Sequence[str]) -> StatementResult:  # fmt: skip
    """Run one parsed statement for a session whose current space is ``space``.

    ``params`` maps parameter names (without ``$``) to values; ``spaces`` lists the known spaces.
    """
    new_space = check_statement(stmt, params, space, spaces)
    if stmt.kind == "use":
        return StatementResult(None, new_space)
    if stmt.kind == "show_spaces":
        rows = [ttypes.Row(values=[Value(sVal=s.encode("utf-8"))]) for s in sorted(spaces)]
        return StatementResult(ttypes.DataSet(column_names=[b"Name"], rows=rows), space)
    names = [c.name.encode("utf-8") for c in stmt.columns]
    row = ttypes.Row(values=[_evaluate(c.expr, params) for c in stmt.columns])
    return StatementResult(ttypes.DataSet(column_names=names, rows=[row]), space)
