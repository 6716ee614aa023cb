"""Run a fake graphd from a shell: ``python -m nebula_sync.testing --host 127.0.0.1 --port 9669``.

Prints one line (``fake graphd listening on <host>:<port>``) once it accepts connections, then
serves until interrupted (Ctrl-C or SIGTERM).

TLS: ``--tls-cert server.pem --tls-key server.key`` serves TLS (as graphd with
``--enable_graph_ssl``); add ``--tls-client-ca ca.pem`` to require client certificates signed by
that CA (mutual TLS).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import Optional

from nebula_sync.testing._server import FakeGraphd


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nebula_sync.testing",
        description="Run a fake NebulaGraph graphd (Thrift on TCP) on a loopback address.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9669, help="TCP port; 0 picks a free one")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="require authentication; repeat for several users")  # fmt: skip
    parser.add_argument("--space", action="append", default=None, metavar="NAME",
                        help="a graph space (repeatable; default: basketballplayer and test)")
    parser.add_argument("--session-idle-timeout", type=float, default=None, metavar="SECONDS",
                        help="expire sessions unused this long (default: never)")
    parser.add_argument("--client-version", action="append", default=None, metavar="VERSION",
                        help="accepted client handshake version (repeatable; default 3.0.0)")
    parser.add_argument("--tls-cert", default=None, metavar="PEM",
                        help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", default=None, metavar="PEM",
                        help="the certificate's private key (default: in --tls-cert)")
    parser.add_argument("--tls-client-ca", default=None, metavar="PEM",
                        help="require client certificates signed by these CAs (mutual TLS)")
    return parser.parse_args(argv)


def _ssl_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The server-side TLS context the ``--tls-*`` flags ask for, or ``None`` for plain TCP."""
    if args.tls_cert is None:
        if args.tls_key is not None or args.tls_client_ca is not None:
            raise ValueError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args.tls_client_ca)
    return ctx


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: start the server, print the ready line, serve until interrupted."""
    args = _parse_args(argv)
    users = None
    if args.user:
        users = {}
        for item in args.user:
            name, sep, password = item.partition(":")
            if not sep:
                print(f"--user wants NAME:PASSWORD, got {item!r}", file=sys.stderr)
                return 2
            users[name] = password
    try:
        server = FakeGraphd(
            args.host,
            args.port,
            users=users,
            spaces=args.space if args.space is not None else ("basketballplayer", "test"),
            client_versions=args.client_version or ("3.0.0",),
            session_idle_timeout=args.session_idle_timeout,
            ssl_context=_ssl_context(args),
        )
        server.start()
    except (OSError, ValueError) as exc:
        print(f"cannot start the fake graphd: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"fake graphd listening on {server.address}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
