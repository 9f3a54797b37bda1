"""``dspex sessions list|show|close --engine HOST:PORT``: look at the sessions of a served engine
(``dspex serve``), and close one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from dspex import _native
from dspex.exceptions import DSpexError


def _rows(client: _native.RemoteClient) -> List[Dict[str, Any]]:
    return [
        {"session_id": sid, "idle_seconds": round(idle, 3), "ttl_seconds": ttl, "variables": nvars, "tools": tools, "indexes": indexes}
        for sid, idle, ttl, nvars, tools, indexes in client.list_sessions()
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="dspex sessions", description="The sessions of a served engine (dspex serve).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("list", "list the open sessions"), ("show", "one session in detail"), ("close", "close a session and release what it owns")):
        p = sub.add_parser(name, help=help_text)
        if name != "list":
            p.add_argument("session_id")
        p.add_argument("--engine", required=True, help="host:port or https://host:port of the engine")
        p.add_argument("--token", default=os.environ.get("DSPEX_TOKEN"), help="the engine's token (default: $DSPEX_TOKEN)")
        p.add_argument("--tls-ca", default=None, help="CA certificate of an engine serving TLS")
        if name != "close":
            p.add_argument("--output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    try:
        client = _native.RemoteClient.connect(args.engine, args.token, args.tls_ca)
        if args.command == "close":
            client.close_session(args.session_id)
            print(f"closed session {args.session_id!r}")
            return 0
        rows = _rows(client)
        if args.command == "show":
            rows = [r for r in rows if r["session_id"] == args.session_id]
            if not rows:
                raise KeyError(f"session {json.dumps(args.session_id)} not found on {args.engine}")
        if args.output == "json":
            print(json.dumps(rows[0] if args.command == "show" else rows, indent=2))
        elif args.command == "show":
            for k, v in rows[0].items():
                print(f"{k:>13}: {', '.join(v) if isinstance(v, list) else v}")
        else:
            print(f"{'session':<36} {'idle s':>8} {'ttl s':>8} {'vars':>5} {'tools':>5} {'indexes':>7}")
            for r in rows:
                print(f"{r['session_id']:<36} {r['idle_seconds']:>8.1f} {r['ttl_seconds']:>8.0f} {r['variables']:>5} {len(r['tools']):>5} {len(r['indexes']):>7}")
        return 0
    except (DSpexError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dspex sessions: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
