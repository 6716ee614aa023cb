"""graphd's ``executeJson`` rendering of an ``ExecutionResponse`` (protocol spec §3.6).

Mirrors ``ExecutionResponse::toJson`` / ``Value::toJson`` / ``Value::getMetaData`` of nebula 3.x:
``{"results": [R], "errors": [E]}`` where ``E = {"code": int, "message"?: str}`` and ``R`` holds
``latencyInUs``, ``errors`` (an object ``E``), and when present ``columns``, ``data`` (a list of
``{"row": [...], "meta": [...]}``), ``spaceName``, ``planDesc`` and ``comment``. Dates and times are
rendered as graphd prints them (UTC, with a trailing ``Z`` for times). Pure functions; thread-safe.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from nebula_sync._thrift import ttypes
from nebula_sync._thrift.ttypes import Value

__all__ = ["response_json", "value_json", "value_meta"]


def _text(b: Optional[bytes]) -> str:
    return (b or b"").decode("utf-8", "replace")


def _date(d: ttypes.Date) -> str:
    return f"{d.year or 0}-{d.month or 0:02d}-{d.day or 0:02d}"


def _time(t: ttypes.Time) -> str:
    return f"{t.hour or 0:02d}:{t.minute or 0:02d}:{t.sec or 0:02d}.{t.microsec or 0:06d}Z"


def _datetime(dt: ttypes.DateTime) -> str:
    # graphd prints the microseconds without padding ("%u"), e.g. 2021-12-21T13:30:15.0Z
    return (f"{dt.year or 0}-{dt.month or 0:02d}-{dt.day or 0:02d}T{dt.hour or 0:02d}:"
            f"{dt.minute or 0:02d}:{dt.sec or 0:02d}.{dt.microsec or 0}Z")  # fmt: skip


def _duration(du: ttypes.Duration) -> str:
    months, seconds, micros = du.months or 0, du.seconds or 0, du.microseconds or 0
    return f"P{months}MT{seconds + micros / 1_000_000:g}S"


def _coords(cs: list[ttypes.Coordinate]) -> str:
    return ", ".join(f"{c.x:g} {c.y:g}" for c in cs)


def _geography(g: ttypes.Geography) -> str:
    if g.ptVal is not None and g.ptVal.coord is not None:
        return f"POINT({_coords([g.ptVal.coord])})"
    if g.lsVal is not None:
        return f"LINESTRING({_coords(g.lsVal.coordList or [])})"
    if g.pgVal is not None:
        rings = ", ".join(f"({_coords(r)})" for r in g.pgVal.coordListList or [])
        return f"POLYGON({rings})"
    return ""


def _tag_props(tags: list[ttypes.Tag]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in tags:
        for key, val in (tag.props or {}).items():
            out[f"{_text(tag.name)}.{_text(key)}"] = value_json(val)
    return out


def _props(props: Optional[dict[bytes, Value]]) -> dict[str, Any]:
    return {_text(k): value_json(v) for k, v in (props or {}).items()}


def _edge_id(src: Optional[Value], dst: Optional[Value], etype: Optional[int], name: Optional[bytes],
             ranking: Optional[int]) -> dict[str, Any]:  # fmt: skip
    return {"name": _text(name), "src": value_json(src), "dst": value_json(dst), "type": etype or 0,
            "ranking": ranking or 0}  # fmt: skip


def value_json(v: Optional[Value]) -> Any:
    """A graph value as graphd's JSON (``Value::toJson``)."""
    if v is None:
        return "__EMPTY__"
    if v.nVal is not None:
        return None
    if v.bVal is not None:
        return v.bVal
    if v.iVal is not None:
        return v.iVal
    if v.fVal is not None:
        return v.fVal
    if v.sVal is not None:
        return _text(v.sVal)
    if v.dVal is not None:
        return _date(v.dVal)
    if v.tVal is not None:
        return _time(v.tVal)
    if v.dtVal is not None:
        return _datetime(v.dtVal)
    if v.vVal is not None:
        return _tag_props(v.vVal.tags or [])
    if v.eVal is not None:
        return _props(v.eVal.props)
    if v.pVal is not None:
        out: list[Any] = []
        if v.pVal.src is not None:
            out.append(_tag_props(v.pVal.src.tags or []))
        for step in v.pVal.steps or []:
            out.append(_props(step.props))
            out.append(_tag_props(step.dst.tags or []) if step.dst is not None else {})
        return out
    if v.lVal is not None:
        return [value_json(x) for x in v.lVal.values or []]
    if v.uVal is not None:
        return [value_json(x) for x in v.uVal.values or []]
    if v.mVal is not None:
        return _props(v.mVal.kvs)
    if v.gVal is not None:
        return dataset_json(v.gVal)
    if v.ggVal is not None:
        return _geography(v.ggVal)
    if v.duVal is not None:
        return _duration(v.duVal)
    return "__EMPTY__"


def value_meta(v: Optional[Value]) -> Any:
    """A graph value's JSON metadata (``Value::getMetaData``)."""
    if v is None:
        return None
    if v.dVal is not None:
        return {"type": "date"}
    if v.tVal is not None:
        return {"type": "time"}
    if v.dtVal is not None:
        return {"type": "datetime"}
    if v.duVal is not None:
        return {"type": "duration"}
    if v.vVal is not None:
        return {"id": value_json(v.vVal.vid), "type": "vertex"}
    if v.eVal is not None:
        e = v.eVal
        return {"id": _edge_id(e.src, e.dst, e.type, e.name, e.ranking), "type": "edge"}
    if v.pVal is not None:
        metas: list[Any] = []
        src = v.pVal.src
        prev = src.vid if src is not None else None
        if src is not None:
            metas.append({"id": value_json(src.vid), "type": "vertex"})
        for step in v.pVal.steps or []:
            dst = step.dst.vid if step.dst is not None else None
            a, b = (prev, dst) if (step.type or 0) >= 0 else (dst, prev)
            metas.append({"id": _edge_id(a, b, step.type, step.name, step.ranking), "type": "edge"})
            metas.append({"id": value_json(dst), "type": "vertex"})
            prev = dst
        return metas
    if v.lVal is not None:
        return [value_meta(x) for x in v.lVal.values or []]
    if v.uVal is not None:
        return [value_meta(x) for x in v.uVal.values or []]
    if v.mVal is not None:
        return {_text(k): value_meta(x) for k, x in (v.mVal.kvs or {}).items()}
    return None


def dataset_json(ds: ttypes.DataSet) -> list[dict[str, Any]]:
    """The ``data`` member: one ``{"row": [...], "meta": [...]}`` per row."""
    return [
        {"row": [value_json(x) for x in row.values or []],
         "meta": [value_meta(x) for x in row.values or []]}
        for row in ds.rows or []
    ]  # fmt: skip


def _plan_json(plan: ttypes.PlanDescription) -> dict[str, Any]:
    nodes = []
    for node in plan.plan_node_descs or []:
        nodes.append({
            "name": _text(node.name),
            "id": node.id or 0,
            "outputVar": _text(node.output_var),
            "description": [{_text(p.key): _text(p.value)} for p in node.description or []],
            "profiles": [
                {"rows": p.rows or 0, "execDurationInUs": p.exec_duration_in_us or 0,
                 "totalDurationInUs": p.total_duration_in_us or 0,
                 "otherStats": {_text(k): _text(v) for k, v in (p.other_stats or {}).items()}}
                for p in node.profiles or []
            ],
            "branchInfo": {
                "isDoBranch": bool(node.branch_info.is_do_branch) if node.branch_info else False,
                "conditionNodeId": node.branch_info.condition_node_id if node.branch_info else -1,
            },
            "dependencies": list(node.dependencies or []),
        })  # fmt: skip
    return {
        "planNodeDescs": nodes,
        "nodeIndexMap": {str(k): v for k, v in (plan.node_index_map or {}).items()},
        "format": _text(plan.format),
        "optimize_time_in_us": plan.optimize_time_in_us or 0,
    }


def response_json(resp: ttypes.ExecutionResponse) -> bytes:
    """The UTF-8 JSON document graphd's ``executeJson*`` returns for ``resp``."""
    errors: dict[str, Any] = {"code": resp.error_code or 0}
    if resp.error_msg is not None:
        errors["message"] = _text(resp.error_msg)
    result: dict[str, Any] = {"latencyInUs": resp.latency_in_us or 0, "errors": errors}
    if resp.data is not None:
        result["columns"] = [_text(c) for c in resp.data.column_names or []]
        result["data"] = dataset_json(resp.data)
    if resp.space_name is not None:
        result["spaceName"] = _text(resp.space_name)
    if resp.plan_desc is not None:
        result["planDesc"] = _plan_json(resp.plan_desc)
    if resp.comment is not None:
        result["comment"] = _text(resp.comment)
    doc = {"results": [result], "errors": [errors]}
    return json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8")
