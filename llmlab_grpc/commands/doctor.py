"""``llmlab doctor [--target HOST:PORT] [--json] [--offline]``: what stops this LAN mesh, and the fix.

Host checks first (interfaces and what a node would announce, the mDNS self-test per
interface, the gRPC port), then, unless ``--offline``, the node at ``--target`` (or the
state file's first node) and what mDNS shows around it. Exit code 0 when nothing fails,
1 otherwise, so scripts can gate on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from llmlab_grpc.client import MeshClient
from llmlab_grpc.doctor import Check, fail, worst
from llmlab_grpc.doctor.host import check_interfaces, check_multicast, check_port
from llmlab_grpc.doctor.node import Asker, node_checks
from llmlab_grpc.doctor.scan import Seen, scan


async def _host_and_scan(offline: bool, seconds: float) -> tuple[Check, list[Seen] | None]:
    if offline:
        return await check_multicast(seconds), None
    multicast, seen = await asyncio.gather(check_multicast(seconds), scan(seconds))
    return multicast, seen


def run(args: argparse.Namespace) -> list[Check]:
    checks = [check_interfaces()]
    multicast, seen = asyncio.run(_host_and_scan(args.offline, args.listen))
    checks.append(multicast)
    if args.offline:
        checks.append(check_port(args.port))
        return checks
    try:
        client = MeshClient.from_args(args)
    except SystemExit as exc:  # no target or no secret: say so as a check
        return [*checks, fail("node", str(exc.code).removeprefix("llmlab: "),
                              "pass --target HOST:PORT and --secret (or LLMLAB_MESH_SECRET), or use --offline")]
    client.close()
    return [*checks, *node_checks(client.target, Asker(client.secret, client.tls), seen)]


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run(args)
    if args.json:
        print(json.dumps({"verdict": worst(checks), "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.verdict.upper() if c.verdict != 'ok' else 'ok':<4}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
        print(f"verdict: {worst(checks)}")
    return 1 if worst(checks) == "fail" else 0


def add_commands(subparsers: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    parser = subparsers.add_parser("doctor", help="check this host and the mesh: what is wrong and how to fix it")
    add_client_flags(parser)
    parser.add_argument("--offline", action="store_true",
                        help="only the checks of this host (interfaces, multicast, ports); no node needed")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LLMLAB_PORT", "50051")),
                        help="gRPC port to check with --offline (default 50051)")
    parser.add_argument("--listen", type=float, default=3.0, help="seconds to listen for mDNS (default 3)")
    return {"doctor": cmd_doctor}
