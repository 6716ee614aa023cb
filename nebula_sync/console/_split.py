"""Split nGQL text into statements: ``;`` ends a statement, comments are dropped.

Quoted text (``"..."`` and ``'...'`` with backslash escapes, ```...``` names) is kept as it is, so
a ``;`` or a comment marker inside a string or a quoted name ends nothing. Comments are removed
before a statement is sent:

* ``#`` and ``//`` to the end of the line;
* ``/* ... */``, possibly over several lines.

These are the comments graphd's own lexer skips. ``--`` is not a comment in nGQL 2.x/3.x (it is
two minus signs: ``RETURN 5 -- 3`` is 8, ``(a) -- (b)`` an undirected edge), so it is sent as text.

A :class:`StatementSplitter` is fed whole lines (or whole texts); it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

__all__ = ["Statement", "StatementSplitter", "split_statements"]

_BLANKS = " \t\r\n\f\v"


@attrs.frozen
class Statement:
    """One statement without its ``;`` and comments; ``line`` is where it starts (1-based)."""

    text: str
    line: int


class StatementSplitter:
    """An incremental splitter: :meth:`feed` lines or texts, collect the statements that a ``;``
    completes, and call :meth:`finish` at the end for a last statement without ``;``."""

    def __init__(self) -> None:
        self._buf: list[str] = []
        self._has_text = False  # the buffer holds a non-blank character
        self._quote = ""  # the open quote character; "" outside quoted text
        self._escape = False  # a backslash inside a string escapes the next character
        self._line_comment = False
        self._block_comment = False
        self._line = 1  # the current line number
        self._start = 1  # the line where the buffered statement starts

    @property
    def pending(self) -> bool:
        """Whether an unfinished statement, string or block comment is buffered."""
        return self._has_text or bool(self._quote) or self._block_comment

    @property
    def line(self) -> int:
        """The current line number (1-based)."""
        return self._line

    def reset(self) -> None:
        """Drop everything buffered (the line count goes on)."""
        line = self._line
        self.__init__()  # type: ignore[misc]
        self._line = line

    def _keep(self, ch: str) -> None:
        if not self._has_text and ch not in _BLANKS:
            self._has_text = True
            self._start = self._line
        self._buf.append(ch)

    def _emit(self, out: list[Statement]) -> None:
        text = "".join(self._buf).strip()
        if text:
            out.append(Statement(text, self._start))
        self._buf.clear()
        self._has_text = False

    def feed(self, text: str) -> list[Statement]:
        """Consume ``text``; returns the statements it completed (those ended by ``;``)."""
        out: list[Statement] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if self._line_comment:
                end = text.find("\n", i)
                if end < 0:
                    break
                self._line_comment = False
                i = end
                continue
            if self._block_comment:
                end = text.find("*/", i)
                stop = n if end < 0 else end
                self._line += text.count("\n", i, stop)
                if end < 0:
                    break
                self._block_comment = False
                self._keep(" ")
                i = end + 2
                continue
            if self._quote:
                self._keep(ch)
                if self._escape:
                    self._escape = False
                elif ch == "\\" and self._quote != "`":
                    self._escape = True
                elif ch == self._quote:
                    self._quote = ""
                if ch == "\n":
                    self._line += 1
                i += 1
                continue
            pair = text[i : i + 2]
            if ch == "#" or pair == "//":
                self._line_comment = True
                i += 1
                continue
            if pair == "/*":
                self._block_comment = True
                i += 2
                continue
            if ch == "\n":
                self._keep(ch)
                self._line += 1
            elif ch == ";":
                self._emit(out)
            else:
                if ch in "\"'`":
                    self._quote = ch
                self._keep(ch)
            i += 1
        return out

    def finish(self) -> Statement | None:
        """End of input: the last statement if it has no ``;``. Resets the splitter."""
        out: list[Statement] = []
        self._emit(out)
        self.reset()
        return out[0] if out else None


def split_statements(text: str) -> Iterator[Statement]:
    """Every statement in ``text`` (``;``-separated; the last one may lack its ``;``)."""
    splitter = StatementSplitter()
    yield from splitter.feed(text)
    last = splitter.finish()
    if last is not None:
        yield last
