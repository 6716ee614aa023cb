"""Command line: ``nebula-sync [options]`` / ``python -m nebula_sync [options]``.

Connects a :class:`~nebula_sync.NebulaClient` and either runs statements once (``-e``, ``-f``,
or statements piped on standard input) or starts the interactive console. ``nebula-sync demo``
runs the concurrency demo (:mod:`nebula_sync.console._demo`).

Exit status: 0 success; 1 a statement failed (graphd's error code name and message are written
to standard error); 2 bad usage (unknown option, bad option value such as an address or a space
name, unreadable file, statements that are not valid UTF-8; nothing is run); 3 could not connect
or authenticate; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, Optional

import attrs

from nebula_sync._client import NebulaClient, Session
from nebula_sync._result import ResultSet
from nebula_sync.config import MAX_SECONDS, ConnectionConfig, SessionConfig, SessionPoolConfig, parse_hosts
from nebula_sync.console._output import FORMATS, format_error, render_result, write
from nebula_sync.console._split import Statement, split_statements
from nebula_sync.errors import (
    AuthenticationError,
    ConnectionFailed,
    IncompatibleServer,
    NebulaError,
)

__all__ = [
    "EXIT_CONNECT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Printer",
    "build_parser",
    "check_utf8",
    "connect",
    "main",
    "quiet_logging",
    "resolve_password",
    "run_statements",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130

DEFAULT_ADDR = "127.0.0.1:9669"
PROG = "nebula-sync"

_DESCRIPTION = """\
A console for NebulaGraph 3.x built on nebula_sync.

Without -e or -f, and with a terminal on standard input, starts an interactive console
(statements end with ';', :help lists the commands); with input piped in, runs those statements.

  nebula-sync --addr 127.0.0.1:9669 --user root --space basketballplayer
  nebula-sync -e 'SHOW SPACES' --format csv
  nebula-sync -f script.ngql --space test
  nebula-sync --embedded                  # a built-in fake graphd with a demo graph
  nebula-sync demo                        # the concurrency demo (see 'nebula-sync demo --help')
"""

_EPILOG = """\
password: --password, else the NEBULA_PASSWORD environment variable, else a prompt (without echo)
when standard input is a terminal, else empty.
exit status: 0 ok, 1 a statement failed, 2 bad usage, 3 could not connect or authenticate,
130 interrupted.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:  # NaN fails both
        raise argparse.ArgumentTypeError(f"must be > 0 and at most {MAX_SECONDS:g} seconds, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the console (``demo`` has its own)."""
    from nebula_sync import __version__

    p = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    conn = p.add_argument_group("connection")
    conn.add_argument("--addr", "-a", action="append", metavar="HOST:PORT",
                      help=f"graphd; repeatable or a comma list (default {DEFAULT_ADDR})")  # fmt: skip
    conn.add_argument("--user", "-u", default="root", help="user name (default root)")
    conn.add_argument("--password", "-p", default=None, help="password (prefer NEBULA_PASSWORD)")
    conn.add_argument("--space", "-s", default=None, help="graph space to USE after connecting")
    conn.add_argument("--timeout", "-t", type=_positive_float, default=60.0, metavar="SECONDS",
                      help="per-statement reply timeout; also bounds connecting (default 60)")  # fmt: skip
    conn.add_argument("--embedded", action="store_true",
                      help="start a fake graphd in-process with a small demo graph and use it")  # fmt: skip
    run = p.add_argument_group("statements")
    run.add_argument("--execute", "-e", action="append", metavar="STATEMENT",
                     help="run these ';'-separated statements and exit (repeatable)")  # fmt: skip
    run.add_argument("--file", "-f", metavar="PATH",
                     help="run the statements of an nGQL file ('-' = standard input) and exit")  # fmt: skip
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="table",
                     help="table (as nebula-console), csv (header, primitives), json (objects)")  # fmt: skip
    out.add_argument("--max-width", type=_non_negative_int, default=0, metavar="N",
                     help="cut table cells wider than N characters (default 0 = never)")  # fmt: skip
    out.add_argument("--timing", action="store_true", help="print the wall time of every statement")
    out.add_argument("--verbose", "-v", action="store_true", help="client log on standard error")
    hist = p.add_argument_group("interactive console")
    hist.add_argument("--history-file", default=None, metavar="PATH",
                      help="readline history file (default ~/.nebula_sync_history)")  # fmt: skip
    hist.add_argument("--no-history", action="store_true", help="neither read nor write a history file")
    p.add_argument("--version", action="version", version=f"%(prog)s (nebula_sync {__version__})")
    return p


@attrs.define
class Printer:
    """Writes results and errors for one run of the console. Single-threaded.

    One-shot runs separate results with an empty line; the interactive console (``interactive``)
    ends every table with one, as nebula-console does.
    """

    fmt: str = "table"
    max_width: Optional[int] = None
    timing: bool = False
    out: IO[str] = attrs.field(factory=lambda: sys.stdout)
    err: IO[str] = attrs.field(factory=lambda: sys.stderr)
    interactive: bool = False
    _shown: int = 0

    def result(self, rs: ResultSet, wall: float) -> None:
        """Print one result and, with timing on, its wall time (seconds) and server latency."""
        text = render_result(rs, self.fmt, max_width=self.max_width)
        if text and self._shown and not self.interactive and self.fmt != "json":
            text = "\n" + text
        if text:
            self._shown += 1
            write(self.out, text)
        if self.timing:
            stream = self.out if self.fmt == "table" else self.err
            write(stream, f"Time: {wall * 1000:.3f} ms (graphd {rs.latency_us} us, "
                          f"client round trip {rs.elapsed_us} us)\n")  # fmt: skip
        if self.interactive and self.fmt == "table":
            write(self.out, "\n")

    def error(self, text: str) -> None:
        """Print an error line on the error stream."""
        write(self.err, text.rstrip("\n") + "\n")


def exit_code(exc: BaseException) -> int:
    """The exit status for an error: 3 for connecting/authenticating, else 1."""
    if isinstance(exc, (ConnectionFailed, AuthenticationError, IncompatibleServer)):
        return EXIT_CONNECT
    return EXIT_FAILED


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_statements(session: Session, statements: Iterable[Statement], printer: Printer,
                   source: Optional[str] = None) -> int:  # fmt: skip
    """Run ``statements`` one by one on ``session``; stop at the first error. The exit status."""
    for st in statements:
        start = time.perf_counter()
        try:
            rs = session.execute(st.text)
        except NebulaError as exc:
            if source is not None:
                printer.error(f"{source}:{st.line}: error: {format_error(exc)}")
            else:
                failed = getattr(exc, "statement", None) or st.text
                printer.error(f"error: {format_error(exc)} (statement: {_short(failed)})")
            return exit_code(exc)
        printer.result(rs, time.perf_counter() - start)
    return EXIT_OK


def resolve_password(given: Optional[str], user: str, *, prompt: bool) -> str:
    """``--password``, else ``$NEBULA_PASSWORD``, else a prompt without echo (when ``prompt``
    and standard input is a terminal), else ``""``."""
    if given is not None:
        return given
    env = os.environ.get("NEBULA_PASSWORD")
    if env is not None:
        return env
    if prompt and sys.stdin.isatty():
        return getpass.getpass(f"Password for {user}: ")
    return ""


def connect(hosts: Sequence[str], user: str, password: str, space: Optional[str],
            timeout: float) -> NebulaClient:  # fmt: skip
    """A client for the console: one session per host, ``timeout`` for replies (and connecting,
    at most 10 s)."""
    return NebulaClient(
        list(hosts),
        user,
        password,
        session_pool_config=SessionPoolConfig(size=1, wait_timeout=timeout),
        conn_config=ConnectionConfig(connect_timeout=min(timeout, 10.0), request_timeout=timeout),
        session_config=SessionConfig(space=space) if space else None,
        close_timeout=2.0,
    )


def quiet_logging(verbose: bool) -> None:
    """Client log records go to standard error with ``verbose``, else nowhere (the console
    reports errors itself; warnings such as "host is down" would only interrupt the prompt)."""
    logger = logging.getLogger("nebula_sync")
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    elif not logger.handlers:
        logger.addHandler(logging.NullHandler())


def check_utf8(text: str) -> str:
    """``text`` itself if it is valid UTF-8 text, else ``UnicodeError`` naming the first bad byte.

    Python hands over undecodable bytes of the command line (and of a stream read with
    ``surrogateescape``) as lone surrogates, which only fail when a statement is encoded to be
    sent; this finds them before anything runs."""
    text.encode("utf-8", "surrogateescape").decode("utf-8")
    return text


def _read_file(path: str) -> str:
    if path == "-":
        return check_utf8(sys.stdin.read())
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option values the client would refuse with ``ValueError`` (a traceback) become usage errors
    (exit status 2), before any statement is read or run."""
    for option, value in (("--user", args.user), ("--space", args.space), ("--password", args.password)):
        if value is None:
            continue
        try:
            check_utf8(value)
        except UnicodeError as exc:
            parser.error(f"{option}: not valid UTF-8 text" + ("" if option == "--password" else f" ({exc})"))
    if not args.user:  # NebulaClient's own check, made before anything is read or started
        parser.error("--user: username must be a non-empty string")
    if args.space:  # "" means no space, as when --space is left out
        try:
            SessionConfig(space=args.space)
        except (ValueError, TypeError) as exc:
            parser.error(f"--space: {exc}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``nebula-sync`` and ``python -m nebula_sync``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "demo":
            from nebula_sync.console._demo import main as demo_main

            return demo_main(args_list[1:])
        parser = build_parser()
        args = parser.parse_args(args_list)
        quiet_logging(args.verbose)
        return _main(parser, args)
    except (KeyboardInterrupt, EOFError):  # Ctrl-C anywhere, Ctrl-D at the password prompt
        write(sys.stderr, "\ninterrupted\n")
        return EXIT_INTERRUPTED


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.embedded and args.addr:
        parser.error("--embedded starts its own server; leave out --addr")
    if args.execute and args.file:
        parser.error("give either -e or -f, not both")
    try:
        hosts = [str(h) for h in parse_hosts(args.addr or [DEFAULT_ADDR])]
    except (ValueError, TypeError) as exc:
        parser.error(f"--addr: {exc}")
    _check_options(parser, args)
    statements: Optional[list[Statement]] = None
    source: Optional[str] = None
    if args.execute:
        try:
            texts = [check_utf8(text) for text in args.execute]
        except UnicodeError as exc:
            write(sys.stderr, f"{PROG}: cannot read -e: {exc}\n")
            return EXIT_USAGE
        statements = [st for text in texts for st in split_statements(text)]
    elif args.file:
        try:
            statements = list(split_statements(_read_file(args.file)))
        except (OSError, UnicodeError) as exc:
            write(sys.stderr, f"{PROG}: cannot read {args.file}: {exc}\n")
            return EXIT_USAGE
        source = "<stdin>" if args.file == "-" else args.file
    interactive = statements is None and sys.stdin.isatty()
    if statements is None and not interactive:
        source = "<stdin>"
        try:
            statements = list(split_statements(_read_file("-")))
        except UnicodeError as exc:
            write(sys.stderr, f"{PROG}: cannot read {source}: {exc}\n")
            return EXIT_USAGE
    printer = Printer(args.format, args.max_width or None, args.timing, interactive=interactive)

    with contextlib.ExitStack() as stack:
        space = args.space
        if args.embedded:
            from nebula_sync.console._demo_graph import DEMO_SPACE, start_embedded

            try:
                server = start_embedded()
            except (OSError, ValueError) as exc:
                printer.error(f"{PROG}: cannot start the embedded fake graphd: {exc}")
                return EXIT_FAILED
            stack.callback(server.stop)
            hosts = [server.address]
            password = ""
            space = space or DEMO_SPACE
        else:
            password = resolve_password(args.password, args.user, prompt=True)
            try:
                check_utf8(password)
            except UnicodeError:  # never quote it
                parser.error("the password is not valid UTF-8 text")
        try:
            client = connect(hosts, args.user, password, space, args.timeout)
        except NebulaError as exc:
            printer.error(f"{PROG}: cannot connect: {format_error(exc)}")
            return EXIT_CONNECT
        stack.enter_context(client)
        if statements is not None:
            try:
                with client.session() as session:
                    return run_statements(session, statements, printer, source)
            except NebulaError as exc:  # no session could be had
                printer.error(f"{PROG}: {format_error(exc)}")
                return exit_code(exc)
        from nebula_sync.console._repl import Repl

        history = None if args.no_history else (args.history_file or _default_history())
        repl = Repl(client, user=args.user, space=space, printer=printer, embedded=args.embedded,
                    history_file=history)  # fmt: skip
        return repl.run()
    return EXIT_OK  # pragma: no cover - the with block always returns


def _default_history() -> str:
    return os.path.join(os.path.expanduser("~"), ".nebula_sync_history")
