"""``GraphService`` method argument and result structs (protocol spec §2), written by hand.

Method names on the wire are exactly the IDL names. No method declares exceptions, so every result
struct has only field 0, ``success``. ``signout`` is oneway and has no result.
"""

from __future__ import annotations

from typing import Any

from thrift.Thrift import TType

from nebula_sync._thrift import ttypes
from nebula_sync._thrift.ttypes import Struct, _spec, link_specs

_BIN = "BINARY"
_PARAMS = (TType.STRING, _BIN, TType.STRUCT, [ttypes.Value, None], False)


class AuthenticateArgs(Struct):
    __slots__ = ("username", "password")
    username: bytes | None
    password: bytes | None


class SignoutArgs(Struct):
    __slots__ = ("sessionId",)
    sessionId: int | None


class ExecuteArgs(Struct):
    """Arguments of ``execute`` and ``executeJson``."""

    __slots__ = ("sessionId", "stmt")
    sessionId: int | None
    stmt: bytes | None


class ExecuteWithParameterArgs(Struct):
    """Arguments of ``executeWithParameter`` and ``executeJsonWithParameter``."""

    __slots__ = ("sessionId", "stmt", "parameterMap")
    sessionId: int | None
    stmt: bytes | None
    parameterMap: dict[bytes, ttypes.Value] | None


class VerifyClientVersionArgs(Struct):
    __slots__ = ("req",)
    req: ttypes.VerifyClientVersionReq | None


class AuthenticateResult(Struct):
    __slots__ = ("success",)
    success: ttypes.AuthResponse | None


class ExecuteResult(Struct):
    __slots__ = ("success",)
    success: ttypes.ExecutionResponse | None


class ExecuteJsonResult(Struct):
    __slots__ = ("success",)
    success: bytes | None


class VerifyClientVersionResult(Struct):
    __slots__ = ("success",)
    success: ttypes.VerifyClientVersionResp | None


_spec(AuthenticateArgs, (1, TType.STRING, "username", _BIN), (2, TType.STRING, "password", _BIN))
_spec(SignoutArgs, (1, TType.I64, "sessionId", None))
_spec(ExecuteArgs, (1, TType.I64, "sessionId", None), (2, TType.STRING, "stmt", _BIN))
_spec(
    ExecuteWithParameterArgs,
    (1, TType.I64, "sessionId", None),
    (2, TType.STRING, "stmt", _BIN),
    (3, TType.MAP, "parameterMap", _PARAMS),
)
_spec(
    VerifyClientVersionArgs, (1, TType.STRUCT, "req", [ttypes.VerifyClientVersionReq, None])
)
_spec(AuthenticateResult, (0, TType.STRUCT, "success", [ttypes.AuthResponse, None]))
_spec(ExecuteResult, (0, TType.STRUCT, "success", [ttypes.ExecutionResponse, None]))
_spec(ExecuteJsonResult, (0, TType.STRING, "success", _BIN))
_spec(
    VerifyClientVersionResult, (0, TType.STRUCT, "success", [ttypes.VerifyClientVersionResp, None])
)
link_specs(
    [
        AuthenticateArgs, SignoutArgs, ExecuteArgs, ExecuteWithParameterArgs,
        VerifyClientVersionArgs, AuthenticateResult, ExecuteResult, ExecuteJsonResult,
        VerifyClientVersionResult,
    ]
)  # fmt: skip

#: wire method name -> (args struct, result struct or ``None`` for oneway)
METHODS: dict[str, tuple[type[Struct], Any]] = {
    "verifyClientVersion": (VerifyClientVersionArgs, VerifyClientVersionResult),
    "authenticate": (AuthenticateArgs, AuthenticateResult),
    "signout": (SignoutArgs, None),
    "execute": (ExecuteArgs, ExecuteResult),
    "executeWithParameter": (ExecuteWithParameterArgs, ExecuteResult),
    "executeJson": (ExecuteArgs, ExecuteJsonResult),
    "executeJsonWithParameter": (ExecuteWithParameterArgs, ExecuteJsonResult),
}
