"""A small demo graph served by the fake graphd (``nebula-sync --embedded``).

Players and teams (tags ``player(name, age)`` and ``team(name)``), ``follow(degree)`` edges between
players and ``serve(start_year, end_year)`` edges from players to teams, in the graph space
``basketballplayer``. The fake graphd has no query engine for graph statements, so the answers to a
few typical queries are scripted with :meth:`FakeGraphd.script` (as :class:`Node`,
:class:`Relationship` and :class:`Path` values); :data:`SCRIPTED` lists them for ``:help``.
Statements are matched ignoring case and blanks around punctuation; either quote may be used.
The fake graphd's own engine answers ``RETURN``/``YIELD`` of expressions, ``USE`` and
``SHOW SPACES``; anything else gets an ``E_EXECUTION_ERROR`` pointing at ``:help``.

The data is immutable; :func:`start_embedded` returns a new, started server.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from nebula_sync._values import Duration, Node, Path, Relationship
from nebula_sync.testing import FakeGraphd

__all__ = ["DEMO_SPACE", "SCRIPTED", "install", "start_embedded"]

DEMO_SPACE = "basketballplayer"

#: vid -> (name, age)
PLAYERS: dict[str, tuple[str, int]] = {
    "player100": ("Tim Duncan", 42),
    "player101": ("Tony Parker", 36),
    "player102": ("LaMarcus Aldridge", 33),
    "player104": ("Marco Belinelli", 32),
    "player125": ("Manu Ginobili", 41),
    "player144": ("Shaquille O'Neal", 47),
}
#: vid -> name
TEAMS: dict[str, str] = {
    "team204": "Spurs",
    "team203": "Trail Blazers",
    "team210": "Hornets",
    "team214": "Lakers",
    "team220": "Heat",
}
#: (src, dst, degree)
FOLLOWS: tuple[tuple[str, str, int], ...] = (
    ("player100", "player101", 95),
    ("player100", "player125", 95),
    ("player101", "player100", 95),
    ("player101", "player102", 90),
    ("player101", "player125", 95),
    ("player102", "player101", 75),
    ("player104", "player100", 55),
    ("player104", "player101", 50),
    ("player125", "player100", 90),
    ("player144", "player100", 80),
)
#: (player, team, start_year, end_year)
SERVES: tuple[tuple[str, str, int, int], ...] = (
    ("player100", "team204", 1997, 2016),
    ("player101", "team204", 1999, 2018),
    ("player101", "team210", 2018, 2019),
    ("player102", "team203", 2006, 2015),
    ("player102", "team204", 2015, 2019),
    ("player104", "team204", 2015, 2017),
    ("player125", "team204", 2002, 2018),
    ("player144", "team214", 1996, 2004),
    ("player144", "team220", 2004, 2008),
)

_TEMPORAL = (
    'RETURN date("2024-02-29") AS d, datetime("2024-02-29T12:30:00") AS dt, '
    "duration({days: 3, hours: 4}) AS du"
)

#: (example statement, what it shows) for ``:help``; ``<player>`` stands for any player id
SCRIPTED: tuple[tuple[str, str], ...] = (
    ("SHOW SPACES", "the graph spaces (answered by the fake graphd's engine)"),
    ("SHOW TAGS", "tags player and team"),
    ("SHOW EDGES", "edge types follow and serve"),
    ("DESCRIBE TAG player", "also: DESCRIBE TAG team, DESCRIBE EDGE follow, DESCRIBE EDGE serve"),
    ("MATCH (v:player) RETURN v LIMIT 3", "three vertices"),
    ("MATCH (v:player) RETURN v.player.name AS name, v.player.age AS age", "every player"),
    ('GO FROM "player100" OVER follow YIELD dst(edge)', "whom a player follows"),
    (
        'GO FROM "player100" OVER follow YIELD properties($$).name AS name, '
        "properties(edge).degree AS degree",
        "the same, with names and degrees",
    ),
    ('GO FROM "player100" OVER serve YIELD edge AS e', "the serve edges of a player"),
    ('FETCH PROP ON player "player100" YIELD properties(vertex)', "a player's properties (a map)"),
    ('FETCH PROP ON player "player100" YIELD vertex AS v', "a player's vertex"),
    ('FETCH PROP ON team "team204" YIELD properties(vertex)', "a team's properties"),
    ('MATCH p=(v:player{name:"Tim Duncan"})-[e:follow]->(v2) RETURN p', "paths; any player name works"),
    (_TEMPORAL, "a date, a datetime and a duration"),
    ("RETURN 1 + 2 AS three, [1, 2] AS pair", "expressions (the fake graphd's engine)"),
)


def player_node(vid: str) -> Node:
    """The vertex of player ``vid``."""
    name, age = PLAYERS[vid]
    return Node(vid, {"player": {"name": name, "age": age}})


def team_node(vid: str) -> Node:
    """The vertex of team ``vid``."""
    return Node(vid, {"team": {"name": TEAMS[vid]}})


def follow_edge(src: str, dst: str, degree: int) -> Relationship:
    """A ``follow`` edge."""
    return Relationship(src, dst, "follow", 0, {"degree": degree})


def serve_edge(src: str, dst: str, start: int, end: int) -> Relationship:
    """A ``serve`` edge."""
    return Relationship(src, dst, "serve", 0, {"start_year": start, "end_year": end})


def follow_path(src: str, dst: str, degree: int) -> Path:
    """The one-step path ``src -[:follow]-> dst``."""
    # Path's attrs converter (tuple) leaves mypy an unsolvable parameter type; call it untyped.
    build: Any = Path
    path: Path = build((player_node(src), player_node(dst)), (follow_edge(src, dst, degree),))
    return path


_TOKEN = re.compile(r'"[^"]*"|\$\$|\w+|\S')


def flex_pattern(statement: str) -> re.Pattern[str]:
    """A regex matching ``statement`` whole, ignoring case, blanks between tokens (at least one
    between two words) and a trailing ``;``; string literals may use either quote."""
    body: list[str] = []
    prev_word = False
    for tok in _TOKEN.findall(statement):
        word = tok[0].isalnum() or tok[0] == "_"
        if body:
            body.append(r"\s+" if prev_word and word else r"\s*")
        if tok.startswith('"'):
            body.append(r"[\"']" + re.escape(tok[1:-1]) + r"[\"']")
        else:
            body.append(re.escape(tok))
        prev_word = word
    return re.compile(r"(?is)^\s*" + "".join(body) + r"\s*;?\s*$")


def install(server: FakeGraphd) -> None:
    """Script the demo graph's answers on ``server`` (see :data:`SCRIPTED`)."""
    # Oldest rule = lowest priority: a clear error for what is neither scripted nor run by the
    # fake graphd's engine.
    server.script(
        re.compile(r"(?is)^\s*(?!(?:RETURN|YIELD|USE)\b|SHOW\s+SPACES\b)\S"),
        error=-1005,
        message="the embedded demo graph has no answer for this statement; "
        "type :help for the statements it knows",
    )

    def rule(statement: str, columns: list[str], rows: list[list[Any]]) -> None:
        server.script(flex_pattern(statement), columns=columns, rows=rows)

    rule("SHOW TAGS", ["Name"], [["player"], ["team"]])
    rule("SHOW EDGES", ["Name"], [["follow"], ["serve"]])
    describe = ["Field", "Type", "Null", "Default", "Comment"]
    rule("DESCRIBE TAG player", describe,
         [["name", "string", "YES", None, None], ["age", "int64", "YES", None, None]])  # fmt: skip
    rule("DESCRIBE TAG team", describe, [["name", "string", "YES", None, None]])
    rule("DESCRIBE EDGE follow", describe, [["degree", "int64", "YES", None, None]])
    rule("DESCRIBE EDGE serve", describe,
         [["start_year", "int64", "YES", None, None], ["end_year", "int64", "YES", None, None]])  # fmt: skip
    rule("MATCH (v:player) RETURN v LIMIT 3", ["v"], [[player_node(vid)] for vid in list(PLAYERS)[:3]])
    rule("MATCH (v:player) RETURN v.player.name AS name, v.player.age AS age", ["name", "age"],
         [[name, age] for name, age in PLAYERS.values()])  # fmt: skip
    for vid, (name, age) in PLAYERS.items():
        follows = [(dst, degree) for src, dst, degree in FOLLOWS if src == vid]
        rule(f'GO FROM "{vid}" OVER follow YIELD dst(edge)', ["dst(EDGE)"], [[dst] for dst, _ in follows])
        rule(f'GO FROM "{vid}" OVER follow YIELD properties($$).name AS name, '
             "properties(edge).degree AS degree",
             ["name", "degree"], [[PLAYERS[dst][0], degree] for dst, degree in follows])  # fmt: skip
        rule(f'GO FROM "{vid}" OVER serve YIELD edge AS e', ["e"],
             [[serve_edge(vid, team, s, e)] for p, team, s, e in SERVES if p == vid])  # fmt: skip
        rule(f'FETCH PROP ON player "{vid}" YIELD properties(vertex)', ["properties(VERTEX)"],
             [[{"name": name, "age": age}]])  # fmt: skip
        rule(f'FETCH PROP ON player "{vid}" YIELD vertex AS v', ["v"], [[player_node(vid)]])
        paths = [[follow_path(vid, dst, degree)] for dst, degree in follows]
        rule(f'MATCH p=(v:player{{name:"{name}"}})-[e:follow]->(v2) RETURN p', ["p"], paths)
    for vid, team in TEAMS.items():
        rule(f'FETCH PROP ON team "{vid}" YIELD properties(vertex)', ["properties(VERTEX)"],
             [[{"name": team}]])  # fmt: skip
    utc = _dt.timezone.utc
    rule(_TEMPORAL, ["d", "dt", "du"],
         [[_dt.date(2024, 2, 29), _dt.datetime(2024, 2, 29, 12, 30, tzinfo=utc),
           Duration(0, 3 * 86400 + 4 * 3600, 0)]])  # fmt: skip


def start_embedded(port: int = 0) -> FakeGraphd:
    """A started fake graphd on 127.0.0.1 (``port`` 0 = a free one) serving the demo graph."""
    server = FakeGraphd("127.0.0.1", port, spaces=(DEMO_SPACE, "test"))
    install(server)
    return server.start()
