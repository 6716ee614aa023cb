#!/usr/bin/env python3
"""Project tasks with nothing but Python 3: ``python3 tasks.py demo`` and ``python3 tasks.py test``.

Each task creates ``.venv`` on first use and installs the project with its test and docs extras
from the project's own files (setup.cfg), reinstalling when setup.cfg changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"


def run(*args: str | os.PathLike[str], check: bool = True) -> int:
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], cwd=ROOT, check=check).returncode


def ensure_venv() -> None:
    """Create the virtual environment and install the project (once per setup.cfg version)."""
    wanted = hashlib.sha256((ROOT / "setup.cfg").read_bytes() + (ROOT / "pyproject.toml").read_bytes())
    digest = wanted.hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", ".[test,docs]")
    STAMP.write_text(digest)


def task_demo(argv: list[str]) -> int:
    """The demo: concurrent statements against two embedded fake graphd hosts (or NEBULA_HOSTS)."""
    ensure_venv()
    return run(PY, "-m", "nebula_sync", "demo", *argv, check=False)


def task_test(argv: list[str]) -> int:
    """Lint, type-check, build the docs and run the whole test suite."""
    ensure_venv()
    steps = [
        [BIN / "ruff", "check", "nebula_sync", "tests", "benchmarks", "examples", "tasks.py"],
        [BIN / "mypy", "--strict", "nebula_sync"],
    ]
    if (ROOT / "docs" / "conf.py").exists():
        sphinx = ["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"]
        steps.append([PY, *sphinx])
    steps.append([PY, "-m", "pytest", "-q", *argv])
    for step in steps:
        code = run(*step, check=False)
        if code != 0:
            print(f"FAILED: {' '.join(str(s) for s in step)} (exit {code})", flush=True)
            return code
    return 0


def task_bench(argv: list[str]) -> int:
    """Run the benchmarks (side by side with nebula3-python)."""
    ensure_venv()
    code = 0
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        code |= run(PY, script, *argv, check=False)
    return code


TASKS = {"demo": task_demo, "test": task_test, "bench": task_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        print("usage: python3 tasks.py {" + "|".join(TASKS) + "} [args...]", file=sys.stderr)
        return 2
    return TASKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
