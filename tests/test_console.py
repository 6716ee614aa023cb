"""The console (``python -m nebula_sync``): one-shot modes through subprocesses, the interactive
console through a pseudo-terminal, the ``demo`` subcommand, and the splitter and output formats
in-process. Every wait is bounded by a deadline; nothing sleeps to synchronise."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any, Callable, Optional, Union

import pytest
from waiting import wait_until

from nebula_sync import ConnectionConfig, Duration, NebulaClient, Node, Path, Relationship
from nebula_sync._result import ResultSet
from nebula_sync.console._cli import Printer, build_parser, main
from nebula_sync.console._demo_graph import SCRIPTED, flex_pattern, follow_path
from nebula_sync.console._output import render_csv, render_json, to_json
from nebula_sync.console._repl import Repl, _quote_name
from nebula_sync.console._split import Statement, StatementSplitter, split_statements
from nebula_sync.testing import FakeGraphd

Factory = Callable[..., FakeGraphd]
TIMEOUT = 30.0


def _env(tmp_path: FsPath, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env.update(HOME=str(tmp_path), TERM="dumb", PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


def run_cli(args: Sequence[str], tmp_path: FsPath, *, stdin: Optional[str] = None,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m nebula_sync *args`` with a deadline; stdin is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "nebula_sync", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        env=env if env is not None else _env(tmp_path),
        cwd=tmp_path,
    )


# ---- one-shot modes ----------------------------------------------------------------------


def test_execute_prints_tables_like_nebula_console(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(
        ["--addr", fake_graphd.address, "-e", "RETURN 1 + 2 AS three; RETURN 'a;b' AS s"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "| three |" in proc.stdout and "| 3     |" in proc.stdout
    assert '| "a;b" |' in proc.stdout
    assert len(re.findall(r"Got 1 row \(time spent \d+/\d+ us\)", proc.stdout)) == 2
    assert [s.statement for s in fake_graphd.statement_log()] == [
        "RETURN 1 + 2 AS three",
        "RETURN 'a;b' AS s",
    ]


def _script_values(server: FakeGraphd) -> None:
    node = Node("player100", {"player": {"name": "Tim Duncan", "age": 42}})
    server.script(
        "MATCH (v) RETURN v",
        columns=["v", "name", "born", "nothing", "ok", "tags", "wait"],
        rows=[
            [node, "Duncan, Tim", dt.date(1976, 4, 25), None, True, ["a", "b"], Duration(0, 90, 0)],
            [node, 'say "hi"', dt.date(2000, 1, 1), None, False, [], Duration(1, 0, 0)],
        ],
    )


def test_format_csv(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    _script_values(fake_graphd)
    proc = run_cli(["--addr", fake_graphd.address, "--format", "csv", "-e", "MATCH (v) RETURN v"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["v", "name", "born", "nothing", "ok", "tags", "wait"]
    assert rows[1][1:] == ["Duncan, Tim", "1976-04-25", "", "true", '["a","b"]', "PT1M30S"]
    assert rows[2][1:] == ['say "hi"', "2000-01-01", "", "false", "[]", "P1M"]
    assert json.loads(rows[1][0]) == {
        "vid": "player100",
        "tags": ["player"],
        "properties": {"player": {"name": "Tim Duncan", "age": 42}},
    }
    assert len(rows) == 3
    assert "Got" not in proc.stdout


def test_format_json(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    _script_values(fake_graphd)
    proc = run_cli(["--addr", fake_graphd.address, "--format", "json", "-e", "MATCH (v) RETURN v"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc[0] == {
        "v": {
            "vid": "player100",
            "tags": ["player"],
            "properties": {"player": {"name": "Tim Duncan", "age": 42}},
        },
        "name": "Duncan, Tim",
        "born": "1976-04-25",
        "nothing": None,
        "ok": True,
        "tags": ["a", "b"],
        "wait": "PT1M30S",
    }
    assert doc[1]["wait"] == "P1M" and doc[1]["ok"] is False


def test_file_with_comments_and_strings(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    script = tmp_path / "setup.ngql"
    script.write_text(
        "# a comment; with a semicolon and a 'quote\n"
        "USE test;  // switch space; really\n"
        "RETURN 'a;b' AS x, \"c # d\" AS y; // trailing ; comment\n"
        "RETURN 5 -- 3 AS eight; RETURN\n"
        "-- 1 AS one;\n"  # '--' is two minus signs in nGQL, not a comment
        "/* a block\n   comment; */ RETURN\n"
        "  1 + 1\n"
        "  AS two\n",
        encoding="utf-8",
    )
    proc = run_cli(["--addr", fake_graphd.address, "-f", str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    sent = [s.statement for s in fake_graphd.statement_log()]
    assert sent == ["USE test", "RETURN 'a;b' AS x, \"c # d\" AS y", "RETURN 5 -- 3 AS eight",
                    "RETURN\n-- 1 AS one", "RETURN\n  1 + 1\n  AS two"]  # fmt: skip
    assert "| eight |" in proc.stdout and "| 8     |" in proc.stdout
    assert "| one |" in proc.stdout and "| 1   |" in proc.stdout
    assert '"c # d"' in proc.stdout and "| 2   |" in proc.stdout
    assert proc.stdout.count("Execution succeeded") == 1  # USE has no columns


def test_file_error_names_line_and_code_and_stops(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    script = tmp_path / "bad.ngql"
    script.write_text(
        "RETURN 1 AS one;\n\n# next one is wrong\nRETURN 1 +;\nRETURN 2 AS two;\n", encoding="utf-8"
    )
    proc = run_cli(["--addr", fake_graphd.address, "-f", str(script)], tmp_path)
    assert proc.returncode == 1
    assert f"{script}:4: error: E_SYNTAX_ERROR (-1004): SyntaxError" in proc.stderr
    assert "| one |" in proc.stdout and "two" not in proc.stdout
    assert len(fake_graphd.statement_log()) == 2


def test_execute_server_error_exit_code(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    fake_graphd.script("DROP SPACE nba", error=-1008, message="No permission to drop space")
    proc = run_cli(["--addr", fake_graphd.address, "-e", "DROP SPACE nba"], tmp_path)
    assert proc.returncode == 1
    assert (
        "error: E_BAD_PERMISSION (-1008): No permission to drop space (statement: DROP SPACE nba)"
        in proc.stderr
    )
    assert proc.stdout == ""


def test_unknown_space(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "--space", "nope", "-e", "RETURN 1"], tmp_path)
    assert proc.returncode == 1
    assert "E_EXECUTION_ERROR (-1005): SpaceNotFound" in proc.stderr and "USE nope" in proc.stderr


def test_space_option(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "--space", "test", "-e", "RETURN 1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [s.statement for s in fake_graphd.statement_log()] == ["USE test", "RETURN 1"]


def test_cannot_connect_exit_code(fake_graphd_factory: Factory, tmp_path: FsPath) -> None:
    server = fake_graphd_factory()
    address = server.address
    server.stop()
    proc = run_cli(["--addr", address, "--timeout", "5", "-e", "RETURN 1"], tmp_path)
    assert proc.returncode == 3
    assert "cannot connect: NoHostAvailable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_password_option_env_and_wrong_password(fake_graphd_factory: Factory, tmp_path: FsPath) -> None:
    server = fake_graphd_factory(users={"root": "right-pw"})
    base = ["--addr", server.address, "-e", "RETURN 5 AS five"]
    wrong = run_cli([*base, "--password", "wrong-pw"], tmp_path)
    assert wrong.returncode == 3
    assert "E_BAD_USERNAME_PASSWORD" in wrong.stderr
    assert "wrong-pw" not in wrong.stderr + wrong.stdout
    ok = run_cli([*base, "--password", "right-pw"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    from_env = run_cli(base, tmp_path, env=_env(tmp_path, NEBULA_PASSWORD="right-pw"))
    assert from_env.returncode == 0, from_env.stderr
    assert "| 5    |" in from_env.stdout
    # no terminal and no password: empty password, no prompt
    empty = run_cli(base, tmp_path)
    assert empty.returncode == 3 and "Password" not in empty.stderr


def test_several_addresses(fake_graphd_factory: Factory, tmp_path: FsPath) -> None:
    a, b, c = (fake_graphd_factory() for _ in range(3))
    proc = run_cli(["--addr", a.address, "--addr", f"{b.address},{c.address}", "-e", "RETURN 1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all(s.stats().connections_accepted >= 1 for s in (a, b, c))  # the client probed each
    assert sum(len(s.statement_log()) for s in (a, b, c)) == 1


def test_statements_from_stdin(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "--format", "json"], tmp_path,
                   stdin="RETURN 1 AS a;\nRETURN [1, 2] AS b\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(part) for part in re.split(r"(?<=\])\n(?=\[)", proc.stdout.strip())]
    assert docs == [[{"a": 1}], [{"b": [1, 2]}]]


def test_console_script(tmp_path: FsPath) -> None:
    script = FsPath(sys.executable).parent / "nebula-sync"
    if not script.exists():  # pragma: no cover - not installed as a distribution
        pytest.skip("the nebula-sync script is not installed next to this Python")
    proc = subprocess.run([str(script), "--embedded", "-e", "SHOW TAGS"], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"player"' in proc.stdout


def test_usage_errors(tmp_path: FsPath) -> None:
    bad = run_cli(["--addr", "host:notaport", "-e", "RETURN 1"], tmp_path)
    assert bad.returncode == 2 and "not a number" in bad.stderr
    missing = run_cli(["-f", str(tmp_path / "missing.ngql")], tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    both = run_cli(["--embedded", "--addr", "127.0.0.1:9669"], tmp_path)
    assert both.returncode == 2
    for timeout in ("inf", "nan", "1e8", "0"):  # a usage error, not a traceback from the config
        out_of_range = run_cli(["--embedded", "--timeout", timeout, "-e", "RETURN 1"], tmp_path)
        assert out_of_range.returncode == 2 and "--timeout" in out_of_range.stderr, out_of_range.stderr
        assert "Traceback" not in out_of_range.stderr


def test_timing_flag_with_csv_goes_to_stderr(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "--format", "csv", "--timing", "-e", "RETURN 1 AS a"],
                   tmp_path)  # fmt: skip
    assert proc.returncode == 0
    assert proc.stdout == "a\n1\n"
    assert re.search(r"Time: [\d.]+ ms \(graphd \d+ us, client round trip \d+ us\)", proc.stderr)


def _status(argv: Sequence[str]) -> int:
    """``main(argv)`` in-process: its return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "a`b"], "nebula-sync: error: --space: space name 'a`b' contains a backquote"),
        (["--space", " "], "nebula-sync: error: --space: space must be a non-empty string"),
        (["--space", "b\udcffad"], "nebula-sync: error: --space: not valid UTF-8 text"),
        (["--user", ""], "nebula-sync: error: --user: username must be a non-empty string"),
        (["--user", "r\udcffoot"], "nebula-sync: error: --user: not valid UTF-8 text"),
        (["--password", "se\udcffcret"], "nebula-sync: error: --password: not valid UTF-8 text\n"),
        (["-e", "RETURN 1 AS a; RETURN \udcff1"], "nebula-sync: cannot read -e: 'utf-8' codec can't decode"),
    ],
)
def test_bad_option_values_are_usage_errors(fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], args: list[str],
                                            message: str) -> None:  # fmt: skip
    # Bytes that are not UTF-8 reach sys.argv as lone surrogates (surrogateescape).
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status = _status(["--addr", fake_graphd.address, *args, *([] if "-e" in args else ["-e", "RETURN 1"])])
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err
    assert "se\udcffcret" not in err  # a password is never echoed
    assert fake_graphd.statement_log() == []  # nothing ran


def test_password_from_the_environment_that_is_not_utf8(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setenv("NEBULA_PASSWORD", "se\udcffcret")
    assert _status(["--addr", fake_graphd.address, "-e", "RETURN 1"]) == 2
    assert "nebula-sync: error: the password is not valid UTF-8 text\n" in capsys.readouterr().err
    assert fake_graphd.statement_log() == []


@pytest.mark.parametrize("io_encoding", ["utf-8", "utf-8:surrogateescape"])
@pytest.mark.parametrize(("extra", "name"), [([], "<stdin>"), (["-f", "-"], "-")])
def test_piped_statements_that_are_not_utf8(fake_graphd: FakeGraphd, tmp_path: FsPath, io_encoding: str,
                                            extra: list[str], name: str) -> None:  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_sync", "--addr", fake_graphd.address, *extra],
        input=b"RETURN 1 AS a;\nRETURN \xff1;\n",
        capture_output=True,
        timeout=TIMEOUT,
        env=_env(tmp_path, PYTHONIOENCODING=io_encoding),
        cwd=tmp_path,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert f"nebula-sync: cannot read {name}: 'utf-8' codec can't decode byte 0xff" in err
    assert "Traceback" not in err
    assert fake_graphd.statement_log() == []  # not even the good first statement ran


def test_execute_that_is_not_utf8_through_the_command_line(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "-e", "RETURN 1 AS a; RETURN \udcff1"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "nebula-sync: cannot read -e: 'utf-8' codec can't decode byte 0xff in position 22" in proc.stderr
    assert fake_graphd.statement_log() == []


def test_help_lists_every_exit_status() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "exit status: 0 ok, 1 a statement failed, 2 bad usage, 3 could not connect or authenticate, " \
           "130 interrupted." in text  # fmt: skip


# ---- embedded -----------------------------------------------------------------------------


def test_embedded_scripted_queries(tmp_path: FsPath) -> None:
    statements = (
        "MATCH (v:player) RETURN v LIMIT 3;"
        'go from "player101" over follow yield dst(edge);'
        "FETCH PROP ON player 'player100' YIELD properties(vertex);"
        'MATCH p=(v:player{name:"Tim Duncan"})-[e:follow]->(v2)\n  RETURN p;'
        "SHOW SPACES; SHOW TAGS; RETURN 40 + 2 AS answer"
    )
    proc = run_cli(["--embedded", "-e", statements], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '("player100" :player{name: "Tim Duncan", age: 42})' in out
    assert '| "player100" |' in out and '| "player125" |' in out  # whom Tony Parker follows
    assert '{name: "Tim Duncan", age: 42}' in out
    assert '-[:follow@0 {degree: 95}]->("player101"' in out
    assert '"basketballplayer"' in out and '"team"' in out and "| 42     |" in out


def test_embedded_json_of_paths_and_temporal_values(tmp_path: FsPath) -> None:
    proc = run_cli(
        [
            "--embedded",
            "--format",
            "json",
            "-e",
            'MATCH p=(v:player{name:"Tony Parker"})-[e:follow]->(v2) RETURN p',
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert [p["p"]["relationships"][0]["dst"] for p in paths] == ["player100", "player102", "player125"]
    proc = run_cli(["--embedded", "--format", "json", "-e",
                    'RETURN date("2024-02-29") AS d, datetime("2024-02-29T12:30:00") AS dt, '
                    "duration({days: 3, hours: 4}) AS du"], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"d": "2024-02-29", "dt": "2024-02-29T12:30:00+00:00", "du": "P3DT4H"}]


def test_embedded_unknown_statement_points_at_help(tmp_path: FsPath) -> None:
    proc = run_cli(["--embedded", "-e", "MATCH (v) RETURN count(v)"], tmp_path)
    assert proc.returncode == 1
    assert "E_EXECUTION_ERROR (-1005)" in proc.stderr and ":help" in proc.stderr


# ---- demo ---------------------------------------------------------------------------------


def _demo_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_demo_with_embedded_servers(tmp_path: FsPath) -> None:
    # No clock on the run: the demo's own waits (wait_timeout, request_timeout) are 30 s, so a
    # demo that sat out one of them hits the subprocess timeout (TIMEOUT) and fails there.
    proc = subprocess.run([sys.executable, "-m", "nebula_sync", "demo"], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = _demo_rows(proc.stdout)
    assert [int(r[0]) for r in rows] == list(range(12))
    assert [r[1] for r in rows] == [f"RETURN {i} AS i" for i in range(12)]
    assert [r[2] for r in rows] == [str(i) for i in range(12)]
    hosts = {r[3] for r in rows}
    assert len(hosts) == 2  # both embedded servers served statements
    for host in hosts:
        assert re.search(rf"{re.escape(host)} served [1-9]\d* statement\(s\)", proc.stdout)
    assert re.search(r"Got 12 results in [\d.]+ ms total", proc.stdout)
    assert "client.stats():" in proc.stdout and "sessions busy/idle" in proc.stdout


def test_demo_uses_nebula_hosts(fake_graphd_factory: Factory, tmp_path: FsPath) -> None:
    a = fake_graphd_factory(users={"demo": "pw"})
    b = fake_graphd_factory(users={"demo": "pw"})
    env = _env(tmp_path, NEBULA_HOSTS=f"{a.address},{b.address}", NEBULA_USER="demo", NEBULA_PASSWORD="pw")
    proc = subprocess.run([sys.executable, "-m", "nebula_sync", "demo", "--count", "6"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Using the cluster in NEBULA_HOSTS" in proc.stdout and "pw" not in proc.stdout
    assert len(_demo_rows(proc.stdout)) == 6
    assert len(a.statement_log()) + len(b.statement_log()) == 6


# ---- interactive console through a pseudo-terminal -----------------------------------------


class Terminal:
    """A child process on a pseudo-terminal: ``expect`` reads until a text appears (deadline)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: FsPath) -> None:
        master, slave = os.openpty()
        # a new session without a controlling terminal: getpass falls back to the pty on stdin
        self.proc = subprocess.Popen([sys.executable, "-m", "nebula_sync", *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True)  # fmt: skip
        os.close(slave)
        self.fd = master
        self.data = b""
        self.pos = 0

    def expect(self, text: Union[str, re.Pattern[bytes]], timeout: float = TIMEOUT) -> bytes:
        """Read until ``text`` appears after what earlier calls consumed; returns the text read up
        to and including it."""
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(text, str):
                idx = self.data.find(text.encode(), self.pos)
                end = idx + len(text.encode()) if idx >= 0 else -1
            else:
                m = text.search(self.data, self.pos)
                end = m.end() if m else -1
            if end >= 0:
                chunk, self.pos = self.data[self.pos : end], end
                return chunk
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; got {self.data[self.pos :]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    more = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    more = b""
                if not more:
                    raise AssertionError(f"the console ended before {text!r}; got {self.data[self.pos :]!r}")
                self.data += more

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
            if ready:
                try:
                    more = os.read(self.fd, 65536)
                except OSError:
                    more = b""
                self.data += more
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path: FsPath) -> Any:
    opened: list[Terminal] = []

    def start(*args: str, env: Optional[dict[str, str]] = None) -> Terminal:
        term = Terminal(args, env if env is not None else _env(tmp_path), tmp_path)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


PROMPT_NONE = "(root@nebula) [(none)]> "
PROMPT_BP = "(root@nebula) [basketballplayer]> "


def test_interactive_session(fake_graphd: FakeGraphd, terminal: Any, tmp_path: FsPath) -> None:
    term = terminal("--addr", fake_graphd.address, "--password", "")
    term.expect("Type :help for help")
    term.expect(PROMPT_NONE)
    term.send("USE basketballplayer;\n")
    term.expect("Execution succeeded")
    term.expect(PROMPT_BP)
    # one statement over three lines; the continuation prompt in between
    term.send("RETURN 1 +\n")
    term.expect("-> ")
    term.send("  2 # a comment; not the end\n")
    term.expect("-> ")
    term.send("  AS three; RETURN 'x;y' AS s;\n")
    out = term.expect(PROMPT_BP)
    assert b"| three |" in out and b"| 3     |" in out and b'"x;y"' in out
    assert out.count(b"Got 1 row") == 2
    assert re.search(rb"Got 1 row \(time spent \d+/\d+ us\)", out)
    term.send(":timing on\n")
    term.expect("Timing is on.")
    term.expect(PROMPT_BP)
    term.send("RETURN 7 AS seven;\n")
    out = term.expect(PROMPT_BP)
    assert re.search(rb"Time: [\d.]+ ms \(graphd \d+ us, client round trip \d+ us\)", out)
    term.send(":timing off\n")
    term.expect("Timing is off.")
    term.expect(PROMPT_BP)
    term.send("RETURN 1 +;\n")  # an error keeps the console going
    out = term.expect(PROMPT_BP)
    assert b"[ERROR] E_SYNTAX_ERROR (-1004): SyntaxError" in out
    term.send(":stats\n")
    out = term.expect(PROMPT_BP)
    assert b"sessions busy/idle" in out and fake_graphd.address.encode() in out
    assert b"1 session(s) busy" in out
    term.send(":help\n")
    out = term.expect(PROMPT_BP)
    assert b":timing on|off" in out and b"demo graph" not in out
    term.send(":exit\n")
    assert term.wait() == 0
    logged = [s.statement for s in fake_graphd.statement_log()]
    assert logged == ["RETURN 1", "USE basketballplayer", "RETURN 1 +\n  2 \n  AS three", "RETURN 'x;y' AS s",
                      "RETURN 7 AS seven", "RETURN 1 +"]  # fmt: skip
    assert fake_graphd.stats().sessions_open == 0  # signed out on exit
    history = tmp_path / ".nebula_sync_history"
    try:
        import readline  # noqa: F401
    except ImportError:  # pragma: no cover
        return
    assert "RETURN 7 AS seven;" in history.read_text(encoding="utf-8")


def test_password_prompt_does_not_echo(fake_graphd_factory: Factory, terminal: Any) -> None:
    server = fake_graphd_factory(users={"root": "s3cret-Pw"})
    term = terminal("--addr", server.address)
    term.expect("Password for root: ")
    term.send("s3cret-Pw\n")
    term.expect(PROMPT_NONE)
    term.send("RETURN 'in' AS logged;\n")
    term.expect('"in"')
    term.send(":quit\n")
    assert term.wait() == 0
    assert b"s3cret-Pw" not in term.data


def test_wrong_password_at_the_prompt(fake_graphd_factory: Factory, terminal: Any) -> None:
    server = fake_graphd_factory(users={"root": "s3cret-Pw"})
    term = terminal("--addr", server.address)
    term.expect("Password for root: ")
    term.send("not-it\n")
    term.expect("E_BAD_USERNAME_PASSWORD")
    assert term.wait() == 3
    assert b"not-it" not in term.data


def test_interactive_embedded_help_and_ctrl_d(terminal: Any) -> None:
    term = terminal("--embedded", "--no-history")
    term.expect("embedded fake graphd")
    term.expect(PROMPT_BP)
    term.send(":help\n")
    out = term.expect(PROMPT_BP)
    for stmt in (
        "MATCH (v:player) RETURN v LIMIT 3;",
        'GO FROM "player100" OVER follow YIELD dst(edge);',
        'FETCH PROP ON player "player100" YIELD properties(vertex);',
        "SHOW TAGS;",
        "SHOW SPACES;",
    ):
        assert stmt.encode() in out, stmt
    term.send("MATCH (v:player)\n")
    term.expect("-> ")
    term.send("RETURN v LIMIT 3;\n")
    out = term.expect(PROMPT_BP)
    assert b"Got 3 rows" in out
    term.send(":format csv\n")
    term.expect("Output format: csv.")
    term.expect(PROMPT_BP)
    term.send('GO FROM "player100" OVER follow YIELD properties($$).name AS name,\n')
    term.expect("-> ")
    term.send("  properties(edge).degree AS degree;\n")
    out = term.expect(PROMPT_BP)
    assert b"name,degree\r\nTony Parker,95\r\nManu Ginobili,95\r\n" in out
    term.send("USE test;\n")
    term.expect("(root@nebula) [test]> ")
    term.send("\x04")  # Ctrl-D
    assert term.wait() == 0


# ---- the REPL in-process: recovering a broken session ------------------------------------


def _scripted_repl(
    client: NebulaClient, steps: list[Union[str, Callable[[], object]]]
) -> tuple[Repl, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()

    def read_line(prompt: str) -> str:
        while True:
            step = steps.pop(0)
            if isinstance(step, str):
                return step
            step()

    repl = Repl(client, user="root", space=None, printer=Printer("table", None, False, out, err),
                read_line=read_line)  # fmt: skip
    return repl, out, err


def test_repl_goes_back_to_its_space_when_graphd_forgot_the_session(fake_graphd: FakeGraphd) -> None:
    with NebulaClient(fake_graphd.address, "root", "") as client:
        repl, out, err = _scripted_repl(client, [
            "USE test;", "RETURN 1 AS one;", fake_graphd.forget_sessions, "RETURN 2 AS two;",
            "RETURN 3 AS three;", ":exit",
        ])  # fmt: skip
        assert repl.run() == 0
        assert repl.space == "test"
    assert err.getvalue() == ""
    assert "| two |" in out.getvalue() and "| three |" in out.getvalue()
    log = fake_graphd.statement_log()
    # The renewed session is put back in the held session's space before the statement re-runs.
    assert [s.statement for s in log] == [
        "RETURN 1",
        "USE test",
        "RETURN 1 AS one",
        "USE test",
        "RETURN 2 AS two",
        "RETURN 3 AS three",
    ]
    assert log[2].session_id != log[3].session_id == log[4].session_id


@pytest.mark.parametrize(
    ("space", "written"), [("test", "test"), ("match", "`match`"), ("Users", "`Users`"), ("a b", "`a b`")]
)
def test_the_space_the_console_goes_back_to_is_written_as_graphd_reads_it(space: str, written: str) -> None:
    # a reserved word would be a keyword, and graphd lowercases unreserved ones ("USE Users")
    assert _quote_name(space) == written


def test_repl_never_runs_a_statement_outside_the_space_its_prompt_shows(fake_graphd: FakeGraphd) -> None:
    # After a broken connection the console takes a new session and moves it to the user's space.
    # If that USE fails, the session must not be kept: the next statement would run elsewhere.
    def break_next() -> None:
        fake_graphd.script("RETURN 'x' AS x", drop="before_reply", times=1)

    def fail_next_use() -> None:
        fake_graphd.script("USE test", error=-1005, message="no leader", times=1)

    with NebulaClient(fake_graphd.address, "root", "") as client:
        repl, out, err = _scripted_repl(client, [
            "USE test;", break_next, "RETURN 'x' AS x;", fail_next_use, "RETURN 1 AS one;",
            "RETURN 2 AS two;", ":exit",
        ])  # fmt: skip
        repl.run()
        assert repl.space == "test"
    assert "no leader" in err.getvalue() and "| two |" in out.getvalue()
    log = [(e.statement, e.session_id) for e in fake_graphd.statement_log()]
    two = log.index(("RETURN 2 AS two", log[-1][1]))
    sid = log[two][1]
    assert [stmt for stmt, s in log[:two] if s == sid][-1] == "USE test"  # it ran in `test`
    assert "RETURN 1 AS one" not in [stmt for stmt, _ in log]  # not sent: its USE had failed


def test_repl_takes_a_new_session_after_the_server_was_down(fake_graphd: FakeGraphd) -> None:
    def restart() -> None:
        fake_graphd.start()
        # the client keeps a host it could not reach aside for a moment (its back-off): wait that
        # out (the back-off is at most 10 s)
        wait_until(lambda: client.stats().hosts[0].retry_in == 0.0, timeout=15.0)

    with NebulaClient(fake_graphd.address, "root", "",
                      conn_config=ConnectionConfig(connect_timeout=2.0)) as client:  # fmt: skip
        repl, out, err = _scripted_repl(client, [
            "USE test;", fake_graphd.stop, "RETURN 2 AS two;", restart, "RETURN 3 AS three;", ":exit",
        ])  # fmt: skip
        assert repl.run() == 0
        assert repl.space == "test"
    assert "[ERROR] ConnectionFailed: could not connect" in err.getvalue()
    assert "| two |" not in out.getvalue() and "| three |" in out.getvalue()
    sent = [s.statement for s in fake_graphd.statement_log()]
    assert sent == ["RETURN 1", "USE test", "USE test", "RETURN 3 AS three"]


def test_repl_rejects_input_that_is_not_utf8(fake_graphd: FakeGraphd) -> None:
    def undecodable() -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    with NebulaClient(fake_graphd.address, "root", "") as client:
        repl, out, err = _scripted_repl(client, [
            "RETURN 1 +", "\udcff AS bad;", "RETURN 2 +", undecodable, "RETURN 3 AS three;", ":exit",
        ])  # fmt: skip
        assert repl.run() == 0
    assert err.getvalue().count("[ERROR] the input is not valid UTF-8 text") == 2
    assert "| three |" in out.getvalue()
    assert [s.statement for s in fake_graphd.statement_log()] == ["RETURN 1", "RETURN 3 AS three"]


def test_help_text(fake_graphd: FakeGraphd) -> None:
    with NebulaClient(fake_graphd.address, "root", "") as client:
        plain = Repl(client, user="root", space=None, printer=Printer()).help_text()
        embedded = Repl(client, user="root", space=None, printer=Printer(), embedded=True).help_text()
    assert "Comments: # ..., // ..., /* ... */" in plain and "-- ..." not in plain
    assert "its statements count as they run" in plain
    # the notes under the demo statements are comments: pasted back, only the statements remain
    block = embedded.split("(space basketballplayer):\n", 1)[1].split("Player ids:", 1)[0]
    assert [st.text for st in split_statements(block)] == [stmt for stmt, _ in SCRIPTED]


# ---- splitter and output formats in-process ----------------------------------------------


def test_split_statements() -> None:
    text = (
        "# a header comment; with 'quote\n"
        'RETURN \'a;b\' AS x;  RETURN "c\\";d" AS y // tail; comment\n'
        ";MATCH (a)--(b)-->(c) RETURN a // more;\n"
        "; USE `odd;name`; /* block ;\n comment */ YIELD 1 # end\n"
    )
    assert list(split_statements(text)) == [
        Statement("RETURN 'a;b' AS x", 2),
        Statement('RETURN "c\\";d" AS y', 2),
        Statement("MATCH (a)--(b)-->(c) RETURN a", 3),
        Statement("USE `odd;name`", 4),
        Statement("YIELD 1", 5),
    ]
    assert list(split_statements(" ; ;\n# only comments\n")) == []
    assert list(split_statements("RETURN 1--1")) == [Statement("RETURN 1--1", 1)]


def test_split_statements_keeps_double_minus() -> None:
    # graphd's lexer skips only #, // and /* */: '--' is two minus signs wherever it stands
    text = (
        "RETURN 5 -- 3 AS x;\n"
        "-- 1 AS starts_a_line;\n"
        "MATCH (v:player) -- (w:player) RETURN w;  -- 'not;a comment' AS s\n"
        "GO FROM 'player100' OVER follow WHERE $$.player.age > 40 -- 1 YIELD dst(edge) AS id"
    )
    assert list(split_statements(text)) == [
        Statement("RETURN 5 -- 3 AS x", 1),
        Statement("-- 1 AS starts_a_line", 2),
        Statement("MATCH (v:player) -- (w:player) RETURN w", 3),
        Statement(
            "-- 'not;a comment' AS s\nGO FROM 'player100' OVER follow WHERE $$.player.age > 40 -- 1 "
            "YIELD dst(edge) AS id",
            3,
        ),
    ]


def test_double_minus_reaches_graphd(fake_graphd: FakeGraphd, tmp_path: FsPath) -> None:
    proc = run_cli(["--addr", fake_graphd.address, "--format", "json", "-e", "RETURN 5 -- 3 AS x"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"x": 8}]  # 5 - (-3), as graphd computes it
    assert [s.statement for s in fake_graphd.statement_log()] == ["RETURN 5 -- 3 AS x"]


def test_splitter_incremental() -> None:
    sp = StatementSplitter()
    assert sp.feed("RETURN\n") == [] and sp.pending
    assert sp.feed("  'multi;\n") == [] and sp.pending  # inside a string
    assert sp.feed("line' AS s; RETURN 2\n") == [Statement("RETURN\n  'multi;\nline' AS s", 1)]
    assert sp.pending
    assert sp.finish() == Statement("RETURN 2", 3)
    assert not sp.pending
    assert sp.feed("/* open\n") == [] and sp.pending
    assert sp.feed("still */ RETURN 3;\n") == [Statement("RETURN 3", 5)]


def test_csv_and_json_rendering() -> None:
    nan = float("nan")
    rs = ResultSet(
        ["n", "f", "e", "p", "s"],
        [
            [
                None,
                nan,
                Relationship("a", "b", "follow", 0, {"degree": 1}),
                follow_path("player100", "player101", 95),
                {"x", "y"},
            ]
        ],
    )
    rows = list(csv.reader(io.StringIO(render_csv(rs))))
    assert rows[0] == ["n", "f", "e", "p", "s"]
    assert rows[1][:2] == ["", "NaN"]
    assert json.loads(rows[1][2]) == {"src": "a", "dst": "b", "type": "follow", "rank": 0,
                                      "properties": {"degree": 1}}  # fmt: skip
    assert json.loads(rows[1][3])["length"] == 1
    doc = json.loads(render_json(rs))
    assert doc[0]["f"] == "NaN" and sorted(doc[0]["s"]) == ["x", "y"]
    assert isinstance(Path, type)
    assert json.loads(to_json({"d": dt.date(2020, 1, 2), "du": Duration(0, 5, 0),
                               "node": Node("v", {"t": {}}), "inf": float("-inf")})) == {
        "d": "2020-01-02", "du": "PT5S", "node": {"vid": "v", "tags": ["t"], "properties": {"t": {}}},
        "inf": "-Infinity",
    }  # fmt: skip
    assert render_json(ResultSet(["a"], [])) == "[]\n"
    assert render_csv(ResultSet(["a", "a"], [[1, 2]])) == "a,a\n1,2\n"


def test_flex_pattern() -> None:
    pat = flex_pattern('GO FROM "player100" OVER follow YIELD dst(edge)')
    assert pat.search('go from "player100" over follow yield dst(EDGE)')
    assert pat.search("GO FROM 'player100'\n  OVER follow\n  YIELD dst ( edge ) ;")
    assert not pat.search('GO FROM "player1000" OVER follow YIELD dst(edge)')
    assert not pat.search('GO FROM "player100" OVERfollow YIELD dst(edge)')
