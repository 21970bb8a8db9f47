"""``llmlab dashboard``: print a fresh one-time dashboard link (the one ``llmlab up`` printed is spent).

The link is minted by the bridge (``POST /api/dashboard-link`` with the mesh secret)
and gives the first browser that opens it a dashboard session cookie
(bridge/access.py). Behind a reverse proxy, open the same path and token on the
proxy's address: the cookie is set for whatever host the browser used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from llmlab_grpc.state import read_state

TIMEOUT_S = 10.0


def _bridge_url(args: argparse.Namespace, state: dict[str, Any]) -> str:
    if args.url:
        return str(args.url).rstrip("/").removesuffix("/llmlab")
    return next((str(n["http_url"]) for n in state.get("nodes", []) if n.get("http_url")), "")


def cmd_dashboard(args: argparse.Namespace) -> int:
    state = read_state() or {}
    secret = args.secret or os.environ.get("LLMLAB_MESH_SECRET") or state.get("secret", "")
    base = _bridge_url(args, state)
    if not base:
        print("llmlab dashboard: no bridge URL: pass --url http://HOST:PORT or start a mesh with llmlab up",
              file=sys.stderr)
        return 1
    if not secret:
        print("llmlab dashboard: no mesh secret: pass --secret or set LLMLAB_MESH_SECRET", file=sys.stderr)
        return 1
    request = urllib.request.Request(f"{base}/api/dashboard-link", method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        print(f"llmlab dashboard: {base} answered {err.code}: {err.read()[:300].decode(errors='replace')}",
              file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"llmlab dashboard: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body))
    else:
        print(body["url"])
        print("llmlab dashboard: the link works once; the browser that opens it keeps a session",
              file=sys.stderr)
    return 0


def add_commands(subparsers: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    parser = subparsers.add_parser("dashboard", help="print a one-time link that opens the dashboard from anywhere")
    parser.add_argument("--url", help="the bridge's base URL (default: the state file's bridge)")
    parser.add_argument("--secret", help="mesh secret (default: LLMLAB_MESH_SECRET or the state file)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return {"dashboard": cmd_dashboard}
