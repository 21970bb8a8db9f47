"""``llmlab apikey add|list|remove``: per-user keys for the OpenAI-compatible ``/v1`` API.

The keys file is local (default ``$LLMLAB_HOME/api_keys.json``, the file bridge nodes
started from the same directory read); ``add`` prints the new key once, only its
sha256 is stored. Nodes pick up changes without a restart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmlab_grpc.openai_api.auth import KeyFileError, add_key, default_keys_path, list_keys, remove_key


def _path(args: argparse.Namespace) -> Path:
    return args.file or default_keys_path()


def cmd_apikey(args: argparse.Namespace) -> int:
    path = _path(args)
    try:
        if args.action == "add":
            key = add_key(path, args.name, args.namespace or "")
            print(key)
            pinned = f", pinned to cache namespace {args.namespace!r}" if args.namespace else ""
            print(f"llmlab apikey: key {args.name!r} added to {path}{pinned}; it is shown only now, store it safely",
                  file=sys.stderr)
            return 0
        if args.action == "remove":
            if not remove_key(path, args.name):
                print(f"llmlab apikey: no key named {args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"removed {args.name}")
            return 0
        rows = [{"name": r.name, "created": datetime.fromtimestamp(r.created_unix, UTC).isoformat(timespec="seconds"),
                 "namespace": r.namespace} for r in list_keys(path)]
    except (KeyFileError, OSError) as exc:
        print(f"llmlab apikey: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no API keys in {path} (llmlab apikey add NAME makes one)")
    for row in rows if not args.json else []:
        pinned = f"  namespace {row['namespace']}" if row["namespace"] else ""
        print(f"{row['name']}  {row['created']}{pinned}")
    return 0


def add_commands(subparsers: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    parser = subparsers.add_parser("apikey", help="manage API keys of the OpenAI-compatible /v1 API")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("add", "make a key for NAME and print it once"), ("remove", "delete NAME's key")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("name", metavar="NAME", help="who the key is for, e.g. alice or ci-bot")
        sub.set_defaults(json=False, namespace=None)
    actions.choices["add"].add_argument(
        "--namespace", help="pin the key to this cache namespace: it can read and write no other, and no other "
                            "per-user key can use this one")
    listing = actions.add_parser("list", help="show the names of the keys (never the keys)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    for sub in actions.choices.values():
        sub.add_argument("--file", type=Path, help="keys file (default $LLMLAB_HOME/api_keys.json)")
    return {"apikey": cmd_apikey}
