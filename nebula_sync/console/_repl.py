"""The interactive console: a prompt showing user and space, statements ended by ``;`` (over as many
lines as needed), readline history, and ``:`` commands (``:help``, ``:exit``/``:quit``,
``:stats``, ``:timing on|off``, ``:format table|csv|json``).

The console holds one session for its whole life, so ``USE`` and session state carry over from
one statement to the next. When the connection to that session's graphd breaks, the console takes
a new session (on any healthy host) for the next statement and switches it back to the current
space. Single-threaded.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Optional

from nebula_sync._client import NebulaClient, Session
from nebula_sync._params import bare_name
from nebula_sync._result import _render_table
from nebula_sync.console._cli import EXIT_OK, Printer, check_utf8, exit_code
from nebula_sync.console._output import FORMATS, format_error, write
from nebula_sync.console._split import StatementSplitter
from nebula_sync.errors import ConnectionFailed, NebulaError, OutcomeUnknown, ProtocolError

__all__ = ["Repl", "format_stats"]

_HELP = """\
Statements end with ';' and may span several lines. Comments: # ..., // ..., /* ... */
(as in graphd, -- is not a comment: it is two minus signs).
Commands (at the start of a statement):
  :help                     this text
  :exit, :quit              leave (also Ctrl-D)
  :stats                    the client's pool statistics per host (this console holds one
                            session, shown busy; its statements count as they run)
  :timing on|off            print the wall time of every statement
  :format table|csv|json    the output format
Ctrl-C clears the statement being typed (or stops waiting for a reply).
"""


def format_stats(client: NebulaClient) -> str:
    """:meth:`NebulaClient.stats` as a table, one row per host, and a summary line."""
    stats = client.stats()
    header = ["host", "state", "sessions busy/idle", "connections active/idle", "statements", "errors",
              "sessions created", "signed out", "last error"]  # fmt: skip
    rows = [
        [
            h.host,
            h.state,
            f"{h.sessions_busy}/{h.sessions_idle}",
            f"{h.connections_active}/{h.connections_idle}",
            str(h.statements),
            str(h.errors),
            str(h.sessions_created),
            str(h.sessions_signed_out),
            h.last_error or "",
        ]  # fmt: skip
        for h in stats.hosts
    ]
    summary = (
        f"{len(stats.hosts)} host(s), {stats.sessions_busy} session(s) busy, {stats.sessions_idle} idle, "
        f"{stats.connections_open} connection(s) open{', client closed' if stats.closed else ''}"
    )
    return _render_table(header, rows, max_width=None) + "\n" + summary


def _quote_name(name: str) -> str:
    """``name`` as graphd reads it back unchanged (see :func:`~nebula_sync._params.bare_name`)."""
    return name if bare_name(name) else "`" + name.replace("`", "") + "`"


class Repl:
    """The read-eval-print loop. ``read_line(prompt)`` defaults to :func:`input` (with readline
    and a history file when standard input is a terminal)."""

    def __init__(
        self,
        client: NebulaClient,
        *,
        user: str,
        space: Optional[str],
        printer: Printer,
        embedded: bool = False,
        history_file: Optional[str] = None,
        read_line: Optional[Callable[[str], str]] = None,
    ) -> None:
        self.client = client
        self.user = user
        self.space = space or ""
        self._configured_space = space or ""  # what every new session starts in
        self.printer = printer
        self.embedded = embedded
        self.history_file = history_file
        self._read_line = read_line or input
        self._readline: Optional[object] = None
        self._stack = contextlib.ExitStack()
        self._session: Optional[Session] = None
        #: statements this console ran, and how many of them failed
        self.statements = 0
        self.failed = 0

    # ---- prompt --------------------------------------------------------------------------

    def prompt(self) -> str:
        """``(user@nebula) [space]> `` (``(none)`` before a space is chosen)."""
        return f"({self.user}@nebula) [{self.space or '(none)'}]> "

    def continuation(self) -> str:
        """The prompt of a statement's further lines, aligned with :meth:`prompt`."""
        return " " * max(0, len(self.prompt()) - 3) + "-> "

    # ---- session -------------------------------------------------------------------------

    def _open(self) -> Session:
        if self._session is None:
            session = self._stack.enter_context(self.client.session())
            if self.space and self.space != self._configured_space:
                # a new session after a broken one: back to the space the user was in; kept only
                # if that worked, or the next statement would run outside the prompt's space
                try:
                    session.execute(f"USE {_quote_name(self.space)}")
                except BaseException:
                    self._drop_session()
                    raise
            self._session = session
        return self._session

    def _drop_session(self) -> None:
        self._session = None
        stack, self._stack = self._stack, contextlib.ExitStack()
        try:
            stack.close()
        except NebulaError:
            pass

    def execute(self, text: str) -> bool:
        """Run one statement and print its result or error; ``True`` if it succeeded."""
        self.statements += 1
        ok = self._execute(text)
        self.failed += not ok
        return ok

    def _execute(self, text: str) -> bool:
        start = time.perf_counter()
        session: Optional[Session] = None
        try:
            session = self._open()
            # If graphd forgot the session (expiry, restart), the client renews it in the space
            # this session had chosen before running the statement: nothing to repair here.
            rs = session.execute(text)
        except KeyboardInterrupt:
            self.printer.error("interrupted: stopped waiting (the statement may still run on graphd)")
            return False
        except NebulaError as exc:
            self.printer.error(f"[ERROR] {format_error(exc)}")
            if isinstance(exc, (ConnectionFailed, OutcomeUnknown, ProtocolError)):
                self._drop_session()
            return False
        self.printer.result(rs, time.perf_counter() - start)
        self.space = session.space
        return True

    # ---- commands ------------------------------------------------------------------------

    def help_text(self) -> str:
        """What ``:help`` prints (plus the scripted queries when embedded)."""
        text = _HELP
        if self.embedded:
            from nebula_sync.console._demo_graph import PLAYERS, SCRIPTED, TEAMS

            lines = ["", "The embedded demo graph answers these statements (space basketballplayer):"]
            for stmt, note in SCRIPTED:
                lines.append(f"  {stmt};")
                lines.append(f"      # {note}")
            lines.append(f"Player ids: {', '.join(PLAYERS)}.")
            lines.append(f"Team ids: {', '.join(TEAMS)}.")
            text += "\n".join(lines) + "\n"
        return text

    def command(self, line: str) -> bool:
        """Run a ``:`` command; ``False`` means leave the console."""
        name, _, arg = line.strip().rstrip(";").strip().partition(" ")
        name, arg = name.lower(), arg.strip().lower()
        out = self.printer.out
        if name in (":exit", ":quit", "exit", "quit"):
            return False
        if name == ":help":
            write(out, self.help_text())
        elif name == ":stats":
            where = f"on {self._session.host}" if self._session is not None else "not open"
            write(out, f"{format_stats(self.client)}\nThis console: session {where}, space "
                       f"{self.space or '(none)'}; {self.statements} statement(s) run, {self.failed} failed."
                       "\n")  # fmt: skip
        elif name == ":timing":
            if arg in ("on", "off"):
                self.printer.timing = arg == "on"
            elif arg:
                self.printer.error("usage: :timing on|off")
                return True
            write(out, f"Timing is {'on' if self.printer.timing else 'off'}.\n")
        elif name == ":format":
            if arg in FORMATS:
                self.printer.fmt = arg
            elif arg:
                self.printer.error(f"usage: :format {'|'.join(FORMATS)}")
                return True
            write(out, f"Output format: {self.printer.fmt}.\n")
        else:
            self.printer.error(f"unknown command {name}; type :help")
        return True

    # ---- history -------------------------------------------------------------------------

    def _setup_readline(self) -> None:
        if self._read_line is not input or not sys.stdin.isatty():
            return
        try:
            import readline
        except ImportError:  # pragma: no cover - e.g. Windows
            return
        self._readline = readline
        with contextlib.suppress(AttributeError):
            readline.set_auto_history(False)
        readline.set_history_length(1000)
        if self.history_file:
            with contextlib.suppress(OSError):
                readline.read_history_file(self.history_file)

    def _remember(self, entry: str) -> None:
        if self._readline is not None:
            import readline

            readline.add_history(entry)

    def _save_history(self) -> None:
        if self._readline is not None and self.history_file:
            import readline

            with contextlib.suppress(OSError):
                readline.write_history_file(self.history_file)

    # ---- loop ----------------------------------------------------------------------------

    def banner(self) -> str:
        """The greeting."""
        from nebula_sync import __version__

        hosts = ", ".join(h.host for h in self.client.stats().hosts)
        text = (f"nebula-sync console (nebula_sync {__version__}), connected to {hosts} as {self.user}.\n"
                "End statements with ';'. Type :help for help, :exit to leave.\n")  # fmt: skip
        if self.embedded:
            text += ("This is an embedded fake graphd with a small demo graph; :help lists the "
                     "statements it answers.\nTry: MATCH (v:player) RETURN v LIMIT 3;\n")  # fmt: skip
        return text

    def run(self) -> int:
        """Greet, check the credentials, then read and run statements until ``:exit`` or EOF.
        Returns the exit status (non-zero only when the first session cannot be set up)."""
        try:
            session = self._open()
            session.execute("RETURN 1")  # authenticate now, so a wrong password fails at once
            self.space = session.space or self.space
        except NebulaError as exc:
            self.printer.error(f"nebula-sync: cannot start a session: {format_error(exc)}")
            self._stack.close()
            return exit_code(exc)
        write(self.printer.out, self.banner())
        self._setup_readline()
        try:
            self._loop()
        finally:
            self._save_history()
            self._drop_session()
        return EXIT_OK

    def _loop(self) -> None:
        splitter = StatementSplitter()
        while True:
            try:
                line = check_utf8(self._read_line(self.continuation() if splitter.pending else self.prompt()))
            except EOFError:
                write(self.printer.out, "\n")
                return
            except KeyboardInterrupt:
                write(self.printer.out, "\n")
                splitter.reset()
                continue
            except UnicodeError as exc:  # undecodable bytes typed or pasted: drop the statement
                self.printer.error(f"[ERROR] the input is not valid UTF-8 text ({exc}); statement cleared")
                splitter.reset()
                continue
            if not splitter.pending:
                word = line.strip().rstrip(";").strip().lower()
                if line.lstrip().startswith(":") or word in ("exit", "quit"):
                    self._remember(line.strip())
                    if not self.command(line):
                        return
                    continue
            for st in splitter.feed(line + "\n"):
                self._remember(" ".join(st.text.split("\n")) + ";")
                self.execute(st.text)
