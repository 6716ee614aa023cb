"""The ``nebula-sync`` console: ``nebula-sync [options]`` or ``python -m nebula_sync [options]``.

Connecting::

    nebula-sync --addr 127.0.0.1:9669 --addr 127.0.0.1:9670 --user root --space basketballplayer
    nebula-sync --addr h1:9669,h2:9669 --timeout 30

``--addr`` is repeatable and takes comma lists (default ``127.0.0.1:9669``); ``--user`` defaults to
``root``. The password comes from ``--password``, else ``NEBULA_PASSWORD``, else a prompt that
does not echo (only when standard input is a terminal), else it is empty. ``--timeout`` is the
per-statement reply timeout (it also bounds connecting, at most 10 s).

Running statements once (exit status 0 ok, 1 a statement failed, 2 bad usage, 3 could not connect
or authenticate, 130 interrupted; the error, with graphd's error code name and message, goes to
standard error)::

    nebula-sync -e 'USE basketballplayer; MATCH (v:player) RETURN v LIMIT 3'
    nebula-sync -f script.ngql --format csv > out.csv
    echo 'SHOW SPACES;' | nebula-sync --format json

Statements are separated by ``;``; ``#``, ``//`` and ``/* */`` comments are dropped (see
:mod:`nebula_sync.console._split`; as in graphd, ``--`` is two minus signs, not a comment), and
``;`` inside strings or backquoted names is kept. All statements run in one session, in order; the
first failure stops the run.

Output formats (``--format``, see :mod:`nebula_sync.console._output`): ``table`` (nebula-console's
table and ``Got N rows (time spent X/Y us)``), ``csv`` (a header row, then primitive values:
strings raw, NULL empty, dates ISO-8601, composite values as compact JSON) and ``json`` (per
statement, a list of ``{column: value}`` objects).

Interactive console (no ``-e``/``-f`` and a terminal on standard input): the prompt shows user
and space (``(root@nebula) [basketballplayer]>``), statements end with ``;`` and may span lines,
readline history is kept in ``~/.nebula_sync_history`` (``--history-file``, ``--no-history``), and
``:help``, ``:exit``/``:quit`` (or Ctrl-D), ``:stats``, ``:timing on|off`` and ``:format`` are
available.

``--embedded`` starts a fake graphd in-process with a small demo graph
(:mod:`nebula_sync.console._demo_graph`), so everything can be tried without a cluster.
``nebula-sync demo`` runs the concurrency demo (:mod:`nebula_sync.console._demo`).
"""

from __future__ import annotations

from nebula_sync.console._cli import main
from nebula_sync.console._split import Statement, StatementSplitter, split_statements

__all__ = ["Statement", "StatementSplitter", "main", "split_statements"]
