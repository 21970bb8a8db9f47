"""A gRPC caller that lives inside a network namespace, driven over stdin/stdout.

The test process runs in the machine's own namespace, which has no route into the
namespaces a LAN test builds (on purpose: every run's LAN is isolated, so concurrent
runs can use the same addresses). The harness starts this script with
``ip netns exec <ns>`` and sends it one JSON line per unary call:

    {"target": "192.168.50.11:50051", "method": "/llmlab.v1.Node/ListPeers",
     "request": "<base64 of the serialized request>", "secret": "...", "timeout": 5.0}

and reads one JSON line back: ``{"ok": true, "response": "<base64>"}`` or
``{"ok": false, "code": "UNAVAILABLE", "details": "..."}``. It handles raw bytes, so it
needs no generated code and any unary method of any service can be called.
"""

from __future__ import annotations

import base64
import json
import sys

import grpc


def main() -> int:
    channels: dict[str, grpc.Channel] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        channel = channels.get(req["target"])
        if channel is None:
            channel = channels[req["target"]] = grpc.insecure_channel(req["target"])
        call = channel.unary_unary(req["method"])  # bytes in, bytes out
        metadata = (("authorization", f"Bearer {req['secret']}"),) if req.get("secret") else None
        try:
            raw = call(base64.b64decode(req["request"]), timeout=float(req.get("timeout", 5.0)), metadata=metadata)
            out = {"ok": True, "response": base64.b64encode(raw).decode()}
        except grpc.RpcError as err:
            out = {"ok": False, "code": err.code().name, "details": err.details() or ""}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    for channel in channels.values():
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
