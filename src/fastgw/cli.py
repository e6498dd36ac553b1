"""The ``fastgw`` command (SPEC section 2)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("FASTGW_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s fastgw[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def cmd_run(args) -> int:
    from .workers import run

    return run(args.config, args.workers)


def cmd_check(args) -> int:
    from .auth.door import Authenticator
    from .config import ConfigError, load_config
    from .gateway import Snapshot, SnapshotError
    from .metrics import Metrics
    from .ratelimit.policy import RateLimiter
    from .tls import ListenerTLSContext, TLSConfigError

    try:
        config = load_config(args.config)
        Snapshot(config, None, Authenticator(config.auth, metrics=Metrics(), audit=None),
                 RateLimiter(config, buckets=None, redis=None, metrics=None, audit=None))
        errors = []
        for listener in config.listeners:
            if listener.tls is not None:
                try:
                    ListenerTLSContext(listener.tls)
                except (TLSConfigError, OSError) as exc:
                    errors.append((config.source, listener.line, f"listeners: tls: {exc}"))
        if errors:
            raise SnapshotError(errors)
    except (ConfigError, SnapshotError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.config}:0: {exc.strerror or exc}", file=sys.stderr)
        return 2
    routes = len(config.routes)
    print(f"{args.config}: ok ({routes} route{'s' if routes != 1 else ''}, "
          f"{len(config.services)} services)")
    return 0


def cmd_version(args) -> int:
    from . import __version__, _core

    core = "compiled" if _core.COMPILED else "pure Python"
    why = " (FASTGW_NO_EXTENSIONS is set)" if _core.NO_EXTENSIONS else ""
    print(f"fastgw {__version__} ({core} core{why}; Python {sys.version.split()[0]})")
    return 0


def cmd_explain(args) -> int:
    import asyncio

    from .explain import explain

    return asyncio.run(explain(args.config, args.method, args.path, args.header, args.token))


def cmd_token(args) -> int:
    from .tokens import mint_from_file

    return mint_from_file(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.port, args.admin_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgw", description="API gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve a config until SIGTERM")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="dry-run one request through a config")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--token", help="a JWT sent as Authorization: Bearer")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    p.add_argument("method")
    p.add_argument("path")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("token", help="mint a signed test token (development aid)")
    p.add_argument("--key", required=True, help="PEM private key (RSA, EC or Ed25519)")
    p.add_argument("--sub", default="dev-user")
    p.add_argument("--scope", default="")
    p.add_argument("--aud", action="append", default=[])
    p.add_argument("--iss", default="fastgw-dev")
    p.add_argument("--ttl", default="1h")
    p.add_argument("--kid", help="default: the key's RFC 7638 thumbprint")
    p.add_argument("--alg", help="default: from the key (RS256, ES256, ES384, EdDSA)")
    p.add_argument("--claim", action="append", default=[],
                   help="extra claim NAME=JSON (other text is a string)")
    p.add_argument("--jwks", action="store_true", help="print the key's public JWKS instead")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("version", help="version and core in use")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("demo", help="a gateway, a demo upstream and ready-to-paste curl lines")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=9901)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    _setup_logging()
    return args.func(args)
