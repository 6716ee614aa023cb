"""Configuration: hosts, connection, session pool and session settings.

Every config class is a frozen, keyword-only ``attrs`` class, validated at construction: a bad
value raises ``ValueError`` or ``TypeError`` naming the field, an unknown keyword raises
``TypeError``. All durations are seconds as floats; ``None`` means "no limit". Instances are
immutable and thread-safe; derive variants with :func:`attrs.evolve`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import attrs

from nebula_sync._params import bare_name
from nebula_sync._thrift.wire import Framing, Limits

__all__ = [
    "DEFAULT_PORT",
    "ConnectionConfig",
    "HostAddress",
    "HostsSpec",
    "SessionConfig",
    "SessionPoolConfig",
    "TLSConfig",
    "parse_address",
    "parse_hosts",
]

DEFAULT_PORT = 9669
#: the longest finite duration accepted anywhere (about 115 days); use ``None`` for "no limit"
MAX_SECONDS = 1e7


@attrs.frozen(order=True)
class HostAddress:
    """One graphd address. ``str()`` gives ``"host:port"`` (``"[::1]:9669"`` for IPv6)."""

    host: str
    port: int = DEFAULT_PORT

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host name must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, got {type(self.port).__name__} for host {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port} for host {self.host!r}")
        if any(c.isspace() for c in self.host) or "/" in self.host:
            raise ValueError(f"host name {self.host!r} contains a space or '/'")
        if ":" in self.host or "[" in self.host or "]" in self.host:
            # only an IPv6 address has a ':' (a "host:port" here would be taken for a name)
            try:
                ipaddress.IPv6Address(self.host)
            except ValueError:
                raise ValueError(
                    f"host {self.host!r} is not an IPv6 address; give the host alone (parse_hosts() "
                    "reads 'host:port' and '[v6]:port')"
                ) from None
        else:
            try:  # what the resolver will be given: a label over 63 characters, an empty one, ...
                self.host.encode("idna")
            except UnicodeError as exc:
                raise ValueError(f"host name {self.host!r} is not a valid DNS name: {exc}") from None

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


HostsSpec = Union[str, HostAddress, Iterable[Union[str, HostAddress, tuple[str, int]]]]


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> HostAddress:
    """Parse one address: ``"host"``, ``"host:port"``, ``"[IPv6]:port"`` or a bare IPv6 address
    (a zone id like ``fe80::1%eth0`` included); a missing port is ``default_port``.

    A host with a ``:`` in it must be an IPv6 address: anything else (``"graphd1:9669:1"``, a URL)
    would only fail later, as a name that does not resolve. Raises ``ValueError`` naming the entry,
    or ``TypeError`` for a non-string. The one parser of host strings: graphd's Thrift addresses
    (:func:`parse_hosts`) and its web addresses (:mod:`nebula_sync.web`) alike.
    """
    if not isinstance(text, str):
        raise TypeError(f"a host must be a str like 'graphd:9669', not {type(text).__name__}")
    item = text.strip()
    if not item:
        raise ValueError("empty host in the host list")
    if "://" in item:
        raise ValueError(f"invalid host {text!r}: give 'host:port', without a scheme like 'http://'")
    if item.startswith("["):
        close = item.find("]")
        if close < 0:
            raise ValueError(f"invalid host {text!r}: '[' without ']'")
        host, rest = item[1:close], item[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid host {text!r}: expected ':port' after ']'")
        if rest == ":":
            raise ValueError(f"invalid host {text!r}: missing port after ':'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid host {text!r}: {host!r} is not an IPv6 address") from None
    elif item.count(":") > 1:  # a bare IPv6 address, without a port
        try:
            ipaddress.IPv6Address(item)
        except ValueError:
            raise ValueError(
                f"invalid host {text!r}: {item!r} is not an IPv6 address; give 'host', 'host:port', "
                "'[IPv6]:port' or a bare IPv6 address"
            ) from None
        host, port_text = item, ""
    else:
        host, colon, port_text = item.partition(":")
        if colon and not port_text:
            raise ValueError(f"invalid host {text!r}: missing port after ':'")
        if not host.strip():
            raise ValueError(f"invalid host {text!r}: missing host name before ':'")
    if not port_text:
        return HostAddress(host, default_port)
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"invalid host {text!r}: port {port_text!r} is not a number")
    return HostAddress(host, int(port_text))


def parse_hosts(hosts: HostsSpec) -> tuple[HostAddress, ...]:
    """Parse a host list: ``"h:p"``, ``"h1:p1,h2:p2"``, ``"[::1]:9669"``, ``[("h", 9669)]``, ...

    Whitespace around entries is ignored; a missing port means 9669; duplicates are kept once.
    Raises ``ValueError`` (naming the bad entry) or ``TypeError``.
    """
    items: list[HostAddress] = []
    if isinstance(hosts, HostAddress):
        items.append(hosts)
    elif isinstance(hosts, (bytes, bytearray)):  # iterable, but of ints
        raise TypeError(f"hosts must be a str, not {type(hosts).__name__}; decode it first")
    elif isinstance(hosts, str):
        items.extend(parse_address(part) for part in hosts.split(","))
    elif isinstance(hosts, Iterable):
        for entry in hosts:
            if isinstance(entry, HostAddress):
                items.append(entry)
            elif isinstance(entry, str):
                items.extend(parse_address(part) for part in entry.split(","))
            elif isinstance(entry, tuple) and len(entry) == 2:
                items.append(HostAddress(str(entry[0]), entry[1]))
            else:
                raise TypeError(f"bad host entry {entry!r}: expected 'host:port', (host, port), HostAddress")
    else:
        raise TypeError(f"hosts must be a string or a list of hosts, got {type(hosts).__name__}")
    unique = tuple(dict.fromkeys(items))
    if not unique:
        raise ValueError("the host list is empty")
    return unique


# ---- validators ------------------------------------------------------------------------------


def _framing(value: Any) -> Framing:
    try:
        return Framing(value)
    except ValueError:
        choices = ", ".join(repr(f.value) for f in Framing)
        raise ValueError(f"framing must be one of {choices}, got {value!r}") from None


def _timeout(allow_none: bool = True, allow_zero: bool = False) -> Any:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            if not allow_none:
                raise ValueError(f"{attribute.name} must be a number of seconds, not None")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{attribute.name} must be seconds as a float, got {type(value).__name__}")
        check_seconds(attribute.name, value, allow_zero=allow_zero)

    return check


def check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``value`` is a sane duration."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds as a float (or None), got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds (or None for no limit), got {value}")
    if value > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:g} seconds (None: no limit), got {value}")


def _int_at_least(low: int, high: int = 2**31 - 1) -> Any:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{attribute.name} must be >= {low}, got {value}")
        if value > high:
            raise ValueError(f"{attribute.name} must be <= {high}, got {value}")

    return check


def _opt_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _path(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _opt_str(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"TLSConfig.{attribute.name} must be a str or path, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class TLSConfig:
    """TLS settings. Verification of the server certificate and host name is **on** by default.

    :param ca_file: PEM file of CAs to trust (default: the system's trust store).
    :param cert_file: client certificate (PEM) for mutual TLS.
    :param key_file: the client certificate's private key (PEM); defaults to ``cert_file``.
    :param key_password: password of ``key_file``, if encrypted (never shown in ``repr``).
    :param verify: ``False`` is the explicit opt-out: no certificate or host name check.
    :param check_hostname: check that the certificate names the host (ignored when ``verify`` is off).
    :param server_hostname: the name to verify and send as SNI instead of the host's address.
    :param ssl_context: a ready ``ssl.SSLContext``; when given, the other settings are not used.
    """

    ca_file: Optional[str] = attrs.field(default=None, converter=_path, validator=_opt_str)
    cert_file: Optional[str] = attrs.field(default=None, converter=_path, validator=_opt_str)
    key_file: Optional[str] = attrs.field(default=None, converter=_path, validator=_opt_str)
    key_password: Optional[str] = attrs.field(default=None, repr=False, validator=_opt_str)
    verify: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    check_hostname: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    server_hostname: Optional[str] = attrs.field(default=None, validator=_opt_str)
    ssl_context: Optional[ssl.SSLContext] = attrs.field(
        default=None,
        repr=False,
        validator=attrs.validators.optional(attrs.validators.instance_of(ssl.SSLContext)),
    )
    _context: ssl.SSLContext = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("TLSConfig.key_file needs cert_file")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"TLSConfig.{name}: no such file {path!r}")
        # Built once, here, so a bad CA file, certificate or key password is reported at
        # construction, naming the file, instead of blaming the host on every connect.
        object.__setattr__(self, "_context", self._build_context())

    def _build_context(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"TLSConfig.ca_file {self.ca_file!r} holds no usable CA: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.check_hostname = self.check_hostname
        if self.cert_file is not None:
            key = self.key_file or self.cert_file

            def password() -> str:
                # Always a callable: OpenSSL must never prompt on a terminal for a passphrase.
                if self.key_password is None:
                    raise ValueError(f"TLSConfig.key_file {key!r} is encrypted: give key_password")
                return self.key_password

            try:
                ctx.load_cert_chain(self.cert_file, self.key_file, password)
            except ValueError:
                raise
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"could not load the client certificate {self.cert_file!r} with key {key!r} "
                    f"(wrong key_password, or the key does not match?): {exc}"
                ) from None
        return ctx

    def create_context(self) -> ssl.SSLContext:
        """The ``SSLContext`` these settings describe (TLS 1.2 or newer), built at construction."""
        return self._context


@attrs.frozen(kw_only=True)
class ConnectionConfig:
    """How connections to graphd are made and used.

    :param connect_timeout: TCP connect + TLS + version handshake, per attempt.
    :param request_timeout: how long one statement may wait for its reply (``None``: forever).
        When it passes, the connection is closed and :class:`~nebula_sync.errors.RequestTimeout`
        is raised: the statement may still run on graphd.
    :param ping_before_execute: ping the connection before every statement (one more round trip).
    :param ping_after_idle: ping a connection before reuse when it was idle longer than this.
    :param ping_timeout: how long a liveness ping may take.
    :param tls: TLS settings; ``None`` for plain TCP.
    :param handshake_key: the version sent in ``verifyClientVersion`` (graphd's whitelist).
    :param tcp_keepalive: enable ``SO_KEEPALIVE`` (plus the idle/interval/count below, where the OS
        supports them), so middleboxes don't silently drop idle connections.
    :param framing: ``"theader"`` (graphd's native framing) or ``"framed"`` (framed binary fallback).
    :param max_connections_per_host: connection cap per host (``None``: the session pool size).
    :param max_idle_time: idle connections older than this are closed.
    :param max_lifetime: connections older than this are closed when returned.
    :param max_frame_size: largest reply frame accepted, bytes.
    :param max_string_length: longest string in a reply, bytes.
    :param max_container_length: most elements in one list, set or map of a reply.
    """

    connect_timeout: Optional[float] = attrs.field(default=10.0, converter=_opt_float, validator=_timeout())
    request_timeout: Optional[float] = attrs.field(default=60.0, converter=_opt_float, validator=_timeout())
    ping_before_execute: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    ping_after_idle: Optional[float] = attrs.field(
        default=30.0, converter=_opt_float, validator=_timeout(allow_zero=True)
    )
    ping_timeout: float = attrs.field(default=3.0, converter=_opt_float, validator=_timeout(allow_none=False))
    tls: Optional[TLSConfig] = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(TLSConfig))
    )
    handshake_key: str = attrs.field(default="3.0.0", validator=attrs.validators.instance_of(str))
    tcp_keepalive: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    # Linux caps TCP_KEEPIDLE / TCP_KEEPINTVL at 32767 s and TCP_KEEPCNT at 127.
    keepalive_idle: int = attrs.field(default=60, validator=_int_at_least(1, 32767))
    keepalive_interval: int = attrs.field(default=10, validator=_int_at_least(1, 32767))
    keepalive_count: int = attrs.field(default=6, validator=_int_at_least(1, 127))
    framing: Framing = attrs.field(default=Framing.THEADER, converter=_framing)
    max_connections_per_host: Optional[int] = attrs.field(
        default=None, validator=attrs.validators.optional(_int_at_least(1))
    )
    max_idle_time: Optional[float] = attrs.field(default=600.0, converter=_opt_float, validator=_timeout())
    max_lifetime: Optional[float] = attrs.field(default=None, converter=_opt_float, validator=_timeout())
    max_frame_size: int = attrs.field(default=256 * 1024 * 1024, validator=_int_at_least(1024))
    max_string_length: int = attrs.field(default=64 * 1024 * 1024, validator=_int_at_least(16))
    max_container_length: int = attrs.field(default=16 * 1024 * 1024, validator=_int_at_least(16))

    def __attrs_post_init__(self) -> None:
        if not self.handshake_key:
            raise ValueError("handshake_key must not be empty")
        try:
            self.handshake_key.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"handshake_key {self.handshake_key!r} cannot be sent: UTF-8 cannot encode a lone surrogate"
            ) from None

    @property
    def limits(self) -> Limits:
        """The decode limits as one object."""
        return Limits(self.max_frame_size, self.max_string_length, self.max_container_length)


@attrs.frozen(kw_only=True)
class SessionPoolConfig:
    """The session pool kept for each host.

    :param size: sessions per host; at most ``hosts × size`` statements wait for a reply at once.
    :param wait_timeout: how long a caller waits for a free session: ``None`` waits forever,
        ``0`` fails at once with :class:`~nebula_sync.errors.PoolTimeout`.
    :param max_idle_time: a session idle longer than this is signed out and replaced when next
        borrowed (keep it below graphd's ``session_idle_timeout_secs``).
    :param max_lifetime: a session older than this is signed out and replaced when next borrowed.
    :param min_idle: sessions per host created when the client starts (at most ``size``), so
        the first statements don't wait for authentication; ``0``: every session is created
        when first needed. Wrong credentials then fail the constructor; other failures are
        logged. Not topped up later: sessions are replaced when next borrowed.
    """

    size: int = attrs.field(default=4, validator=_int_at_least(1))
    wait_timeout: Optional[float] = attrs.field(
        default=60.0, converter=_opt_float, validator=_timeout(allow_zero=True)
    )
    max_idle_time: Optional[float] = attrs.field(default=3600.0, converter=_opt_float, validator=_timeout())
    max_lifetime: Optional[float] = attrs.field(default=None, converter=_opt_float, validator=_timeout())
    min_idle: int = attrs.field(default=0, validator=_int_at_least(0))

    def __attrs_post_init__(self) -> None:
        if self.min_idle > self.size:
            raise ValueError(f"min_idle={self.min_idle} is larger than size={self.size}")


def _statements(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise TypeError(f"init_statements must be a str or a list of str, not {type(value).__name__}")
    return tuple(value)


def _check_statements(inst: Any, attribute: attrs.Attribute[Any], value: Sequence[Any]) -> None:
    for stmt in value:
        if not isinstance(stmt, str) or not stmt.strip():
            raise TypeError(f"{attribute.name} must be non-empty strings, got {stmt!r}")


def _check_space(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"space must be a non-empty string, got {value!r}")
    if "`" in value or "\n" in value:
        raise ValueError(f"space name {value!r} contains a backquote or a newline")


@attrs.frozen(kw_only=True)
class SessionConfig:
    """What every session is set up with, after each (re-)authentication.

    :param space: graph space chosen with ``USE`` after authentication, and restored before a
        session goes back to the pool if a statement changed it.
    :param init_statements: statements run after authentication (and after ``USE``).
    """

    space: Optional[str] = attrs.field(default=None, validator=_check_space)
    init_statements: tuple[str, ...] = attrs.field(
        default=(), converter=_statements, validator=_check_statements
    )

    def use_statement(self) -> str | None:
        """The ``USE`` statement for :attr:`space`, or ``None``. The name is backquoted unless it is
        a lowercase identifier that is not a reserved word (``USE `match```, ``USE `Users```: graphd
        would read one as a keyword, and lowercase the other)."""
        if self.space is None:
            return None
        if bare_name(self.space):
            return f"USE {self.space}"
        return f"USE `{self.space}`"
