"""Every code example in ``docs/*.md`` runs, against fake graphd servers.

How pages are tested:

* Each fenced ```` ```python ```` block of a page is executed, in page order, in one namespace per
  page (later blocks may use names an earlier block defined), in a fresh Python subprocess.
* Two :class:`~nebula_sync.testing.FakeGraphd` servers stand in for the cluster the examples talk
  to: ``127.0.0.1:9669`` and ``127.0.0.1:9670``, the addresses the docs use. If one of those ports
  is taken on this machine, the servers listen on free ports and the examples' addresses are
  rewritten to them. The servers hold a little sample data (the ``player`` vertices and ``follow``
  edges the examples query, see :func:`_sample_data`), accept any password, and report a session
  timezone of UTC+08:00.
* After a page ran, every session it opened must be signed out and every connection closed (the
  examples close their clients), and nothing may have printed a ``ResourceWarning``.
* Markers (HTML comments, invisible in the rendered page) on the line before a fence:

  - ``<!-- docs-test: skip (reason) -->`` before a python block: not run (it needs something the
    fakes cannot give, e.g. a TLS certificate); it is still compiled, and reported as a pytest skip
    with its reason, so the few there are stay visible.
  - ``<!-- docs-test: output -->`` before a ```` ```text ```` block: that block is exactly what the
    python block before it prints (``time spent N/M us`` numbers excepted).
  - ``<!-- docs-test: pytest -->`` before a python block: the block is a complete pytest module
    (fixtures and tests); it is written to a file and run with pytest, and all its tests must
    pass. It does not share the page's namespace.

* The defaults tables of ``configuration.md`` list every field of the config classes, in order,
  with the default the code has.
* Python code must be fenced as ```` ```python ````; other spellings (``py``, ``python3``,
  ``pycon``) are rejected so that no example escapes the test.
"""

from __future__ import annotations

import enum
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import attrs
import pytest

from nebula_sync import (
    ConnectionConfig,
    Duration,
    Node,
    Point,
    Relationship,
    SessionConfig,
    SessionPoolConfig,
    TLSConfig,
)
from nebula_sync import Path as GraphPath
from nebula_sync.testing import FakeGraphd

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
DOC_ADDRESSES = ("127.0.0.1:9669", "127.0.0.1:9670")
PAGE_TIMEOUT = 120.0  # seconds for one page's examples, all blocks together
MAX_SKIPPED = 6

# Languages a fenced block may declare. "python" blocks run; the others are shown only.
# MyST directives ({toctree}, {eval-rst}, ...) are allowed as long as they are not code cells.
_SHOWN_ONLY = {"", "text", "console", "shell", "bash", "ini", "toml", "cfg", "json", "nginx", "dockerfile"}
_FORBIDDEN = {"py", "python3", "pycon", "ipython", "{code-cell}", "{code-block}", "{code}",
              "{literalinclude}"}  # fmt: skip
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<body>.*?)\s*-->$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$")
_TIMING = re.compile(r"time spent \d+/\d+ us")


@attrs.frozen
class Block:
    """One fenced block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: Optional[str]  # the docs-test marker body on the line before, if any

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def runs_in_page(self) -> bool:
        """A python block executed in the page's shared namespace."""
        return self.lang == "python" and self.skip_reason is None and self.marker != "pytest"

    @property
    def skip_reason(self) -> Optional[str]:
        m = _SKIP.match(self.marker or "")
        return m.group("reason").strip() if m else None


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the marker written just before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), m.group("indent")
        info = m.group("info").strip()
        lang = info.split()[0] if info else ""
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        else:
            raise AssertionError(f"docs/{path.name}:{start + 1}: fence never closed")
        i += 1
        marker = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            mm = _MARKER.match(lines[j].strip())
            if mm:
                marker = mm.group("body")
        blocks.append(Block(path.name, start + 1, lang, "\n".join(body) + "\n", marker))
    return blocks


def _all_blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_blocks(page)]


def _python_pages() -> list[str]:
    return [p.name for p in PAGES if any(b.runs_in_page for b in parse_blocks(p))]


def _pytest_blocks() -> list[Block]:
    return [b for b in _all_blocks() if b.lang == "python" and b.marker == "pytest"]


def _skipped() -> list[Block]:
    return [b for b in _all_blocks() if b.lang == "python" and b.skip_reason]


# ---- structure of the pages ----------------------------------------------------------------


def test_the_docs_have_examples() -> None:
    assert PAGES, "no docs/*.md pages found"
    assert sum(1 for b in _all_blocks() if b.runs_in_page) >= 20


def test_every_fenced_block_declares_a_known_language() -> None:
    bad = []
    for b in _all_blocks():
        if b.lang == "python" or b.lang in _SHOWN_ONLY:
            continue
        if b.lang in _FORBIDDEN or not b.lang.startswith("{"):
            bad.append(f"{b.where}: fence language {b.lang!r} (write python code as ```python)")
    assert bad == []


def test_markers_are_well_formed() -> None:
    problems = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if "docs-test" in line and not _MARKER.match(line.strip()):
                problems.append(f"docs/{page.name}:{n}: malformed marker {line.strip()!r}")
        blocks = parse_blocks(page)
        for k, b in enumerate(blocks):
            if b.marker is None:
                continue
            if b.skip_reason is not None:
                if b.lang != "python":
                    problems.append(f"{b.where}: a skip marker belongs before a python block")
            elif b.marker == "pytest":
                if b.lang != "python":
                    problems.append(f"{b.where}: a pytest marker belongs before a python block")
            elif b.marker == "output":
                if b.lang != "text" or k == 0 or blocks[k - 1].lang != "python":
                    problems.append(f"{b.where}: an output marker belongs before a text block that "
                                    "follows a python block")
                elif blocks[k - 1].skip_reason:
                    problems.append(f"{b.where}: output of a skipped example cannot be checked")
            else:
                problems.append(f"{b.where}: unknown marker {b.marker!r} (skip (reason), output or pytest)")
    assert problems == []


def test_skipped_examples_are_few() -> None:
    skipped = _skipped()
    assert len(skipped) <= MAX_SKIPPED, [f"{b.where}: {b.skip_reason}" for b in skipped]


@pytest.mark.parametrize("block", _skipped(), ids=lambda b: b.where)
def test_skipped_example(block: Block) -> None:
    """Skipped examples still compile; the skip and its reason show up in the pytest summary."""
    compile(block.code, block.where, "exec")
    pytest.skip(f"{block.where}: {block.skip_reason}")


# ---- the fake cluster ----------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sample_data(server: FakeGraphd) -> None:
    """Scripted answers for the graph statements the examples run (the engine only does RETURN,
    YIELD, USE and SHOW SPACES)."""
    tim = Node("player100", {"player": {"name": "Tim Duncan", "age": 42}})
    tony = Node("player101", {"player": {"name": "Tony Parker", "age": 36}})
    follows = Relationship("player100", "player101", "follow", 0, {"degree": 95})
    server.script(re.compile(r"^(INSERT|UPSERT|UPDATE|DELETE|CREATE|DROP)\b", re.I), columns=[], rows=[])
    server.script(re.compile(r"^MATCH \(v:player\) WHERE id\(v\) == \$vid RETURN v$"),
                  columns=["v"], rows=[[tim]])  # fmt: skip
    server.script(re.compile(r"^MATCH \(v:player\) RETURN v\.player\.name AS name, v\.player\.age AS age"),
                  columns=["name", "age"],
                  rows=[["Tim Duncan", 42], ["Tony Parker", 36], ["Manu Ginobili", 41]])  # fmt: skip
    server.script(re.compile(r"^GO FROM \$vid OVER follow YIELD edge AS e$"), columns=["e"], rows=[[follows]])
    server.script(re.compile(r"^MATCH p = \(:player\)-\[:follow\]->\(:player\) RETURN p LIMIT 1$"),
                  columns=["p"], rows=[[GraphPath([tim, tony], [follows])]])  # fmt: skip
    server.script(re.compile(r"^FETCH PROP ON player \$vid YIELD properties\(vertex\) AS p$"),
                  columns=["p"], rows=[[{"name": "Manu Ginobili", "age": 41}]])  # fmt: skip
    server.script(re.compile(r"^RETURN duration\(\{years: 1, months: 2, seconds: 3\}\) AS d$"),
                  columns=["d"], rows=[[Duration(14, 3, 0)]])  # fmt: skip
    server.script(re.compile(r'^RETURN ST_Point\(116\.4, 39\.9\) AS here$'),
                  columns=["here"], rows=[[Point(116.4, 39.9)]])  # fmt: skip


@pytest.fixture
def doc_cluster() -> Iterator[dict[str, FakeGraphd]]:
    """Fake graphd servers for the documented addresses: ``{documented address: server}``."""
    servers: dict[str, FakeGraphd] = {}
    try:
        for addr in DOC_ADDRESSES:
            port = int(addr.rsplit(":", 1)[1])
            server = FakeGraphd("127.0.0.1", port if _port_free(port) else 0,
                                time_zone_offset_seconds=8 * 3600, time_zone_name="+08:00")  # fmt: skip
            _sample_data(server)
            servers[addr] = server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# ---- running a page ------------------------------------------------------------------------

_RUNNER = textwrap.dedent(
    """
    import contextlib, faulthandler, io, json, sys, traceback
    faulthandler.dump_traceback_later(float(sys.argv[2]), exit=True)
    blocks = json.load(sys.stdin)
    namespace = {"__name__": "__main__"}
    results = []
    for block in blocks:
        out = io.StringIO()
        error = None
        try:
            code = compile(block["code"], block["where"], "exec")
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
        except BaseException:
            error = traceback.format_exc()
        results.append({"where": block["where"], "stdout": out.getvalue(), "error": error})
        if error is not None:
            break
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(results, f)
    """
)


def _rewrite(code: str, cluster: dict[str, FakeGraphd]) -> str:
    """Point the documented addresses at the fakes (only when one had to take another port)."""
    for addr, server in cluster.items():
        if server.address != addr:
            host, port = addr.rsplit(":", 1)
            code = code.replace(addr, server.address)
            code = code.replace(f'("{host}", {port})', f'("{host}", {server.port})')
    return code


def _normalise(text: str) -> str:
    lines = [_TIMING.sub("time spent N/M us", line.rstrip()) for line in text.strip("\n").splitlines()]
    return "\n".join(lines)


def _run_page(page: str, cluster: dict[str, FakeGraphd], tmp_path: Path) -> list[dict[str, Any]]:
    blocks = [b for b in parse_blocks(DOCS / page) if b.runs_in_page]
    payload = json.dumps([{"where": b.where, "code": _rewrite(b.code, cluster)} for b in blocks])
    result_file = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", _RUNNER, str(result_file), str(PAGE_TIMEOUT - 10)],
        input=payload, capture_output=True, text=True, timeout=PAGE_TIMEOUT, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result_file.exists(), f"the runner for docs/{page} died (exit {proc.returncode}):\n{proc.stderr}"
    results: list[dict[str, Any]] = json.loads(result_file.read_text(encoding="utf-8"))
    for r in results:
        assert r["error"] is None, f"example {r['where']} failed:\n{r['error']}\nstderr:\n{proc.stderr}"
    assert len(results) == len(blocks)
    assert "ResourceWarning" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    return results


@pytest.mark.parametrize("page", _python_pages())
def test_page_examples_run(page: str, doc_cluster: dict[str, FakeGraphd], tmp_path: Path) -> None:
    results = _run_page(page, doc_cluster, tmp_path)
    # Printed output shown in the page is what the example printed.
    blocks = parse_blocks(DOCS / page)
    stdout = {r["where"]: r["stdout"] for r in results}
    for k, b in enumerate(blocks):
        if b.marker == "output":
            source = blocks[k - 1]
            assert _normalise(stdout[source.where]) == _normalise(b.code), (
                f"{b.where}: the output shown differs from what {source.where} printed:\n"
                f"{stdout[source.where]}"
            )
    # The examples closed their clients: nothing left open on the fakes.
    for server in doc_cluster.values():
        server.wait_for(lambda s: s.sessions_open == 0 and s.connections_open == 0, timeout=10)
    code = "".join(b.code for b in blocks if b.runs_in_page)
    for addr, server in doc_cluster.items():
        if addr in code:
            assert server.stats().connections_accepted > 0, f"docs/{page} names {addr} but never connected"


@pytest.mark.parametrize("block", _pytest_blocks(), ids=lambda b: b.where)
def test_pytest_example(block: Block, tmp_path: Path) -> None:
    """A documented pytest module passes when run with pytest (warnings are errors)."""
    module = tmp_path / "test_docs_example.py"
    module.write_text(block.code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", str(module)],
        capture_output=True, text=True, timeout=PAGE_TIMEOUT, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"{block.where}:\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout


# ---- the defaults table of configuration.md ------------------------------------------------


def _literal(value: Any) -> str:
    """A default as the table writes it: Python literal syntax, enums by value."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _defaults_tables() -> dict[str, dict[str, str]]:
    """``{class name: {field: default text}}`` from the ``### ClassName`` tables of the page."""
    tables: dict[str, dict[str, str]] = {}
    current: Optional[dict[str, str]] = None
    for line in (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### (\w+)$", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        if line.startswith("## "):
            current = None
        row = re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)
        if current is not None and row:
            current[row.group(1)] = row.group(2)
    return tables


def test_configuration_defaults_table_matches_the_code() -> None:
    tables = _defaults_tables()
    classes = {c.__name__: c for c in (SessionPoolConfig, ConnectionConfig, SessionConfig, TLSConfig)}
    assert set(tables) == set(classes)
    for name, cls in classes.items():
        fields = attrs.fields(cls)
        documented = tables[name]
        public = [f.name for f in fields if f.init]  # private state (init=False) is not configuration
        assert list(documented) == public, f"{name}: fields missing or out of order"
        for f in fields:
            if not f.init:
                continue
            shown = documented[f.name]
            assert shown == _literal(f.default), f"{name}.{f.name}: the table says {shown}"
