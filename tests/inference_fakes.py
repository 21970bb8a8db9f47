"""Local HTTP servers on 127.0.0.1 that speak the Ollama and OpenAI chat APIs, for backend tests.

Real servers on real sockets (the node's Ray actor connects to them like to the real
thing), with a predictable "model": it answers ``echo: <last user message>`` one word
per streamed chunk. The last user message steers it:

- ``slow N``: N chunks, 0.1 s apart (to cancel or queue behind);
- with ``tools`` in the request: one call of the first tool with ``{"x": 1}``.

``max_tokens`` / ``num_predict`` cut the chunks ("length"); a ``stop`` string cuts the
text before it. Every request body is recorded in ``requests``; a client that goes
away mid-stream is counted in ``disconnects``. A server made with ``stall=True`` accepts
every generation request and never answers it (until it is closed): a backend that hangs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeLlmServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, content_type: str, lines: Iterator[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in lines:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with self.server.lock:
                self.server.disconnects += 1
        self.close_connection = True

    def do_GET(self) -> None:
        self.server.get(self)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.server.stall:
            self.server.released.wait()
            self.close_connection = True
            return
        self.server.post(self, body)


class FakeLlmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, models: list[str], stall: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.models = models
        self.stall = stall
        self.released = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeLlmServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()

    def get(self, handler: _Handler) -> None:
        handler._json(404, {"error": "not found"})

    def post(self, handler: _Handler, body: dict[str, Any]) -> None:
        handler._json(404, {"error": "not found"})

    @staticmethod
    def plan(messages: list[dict[str, Any]], limit: int, stop: list[str]) -> tuple[list[str], float, str]:
        """(chunks, delay between chunks, finish reason) for the fake model's answer."""
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        if last.startswith("slow"):
            count = int(last.split()[1]) if len(last.split()) > 1 else 50
            words, delay = [f"w{i}" for i in range(count)], 0.1
        else:
            words, delay = ["echo:", *last.split()], 0.0
        text = " ".join(words)
        finish = "stop"
        for s in stop:
            if s in text:
                text = text[: text.index(s)]
        chunks = [w + " " for w in text.split(" ") if w]
        if len(chunks) > limit:
            chunks, finish = chunks[:limit], "length"
        return chunks, delay, finish


class FakeOllama(FakeLlmServer):
    """``GET /api/tags``, ``POST /api/chat`` (JSON lines)."""

    def get(self, handler: _Handler) -> None:
        if handler.path == "/api/tags":
            handler._json(200, {"models": [{"name": m, "model": m, "size": 1} for m in self.models]})
        else:
            super().get(handler)

    def post(self, handler: _Handler, body: dict[str, Any]) -> None:
        if handler.path != "/api/chat":
            return super().post(handler, body)
        if body.get("model") not in self.models:
            return handler._json(404, {"error": f"model '{body.get('model')}' not found"})
        options = body.get("options") or {}
        chunks, delay, finish = self.plan(body["messages"], int(options.get("num_predict") or 128),
                                          list(options.get("stop") or []))

        def lines() -> Iterator[bytes]:
            base = {"model": body["model"], "created_at": "2024-01-01T00:00:00Z"}
            if body.get("tools"):
                name = body["tools"][0]["function"]["name"]
                call = {"function": {"name": name, "arguments": {"x": 1}}}
                yield json.dumps({**base, "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                                  "done": False}).encode() + b"\n"
                yield json.dumps({**base, "message": {"role": "assistant", "content": ""}, "done": True,
                                  "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 5}).encode() + b"\n"
                return
            for chunk in chunks:
                time.sleep(delay)
                yield json.dumps({**base, "message": {"role": "assistant", "content": chunk},
                                  "done": False}).encode() + b"\n"
            yield json.dumps({**base, "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": finish, "prompt_eval_count": 7,
                              "eval_count": len(chunks)}).encode() + b"\n"

        handler._stream("application/x-ndjson", lines())


class FakeOpenAI(FakeLlmServer):
    """``GET /v1/models``, ``POST /v1/chat/completions`` (Server-Sent Events), optional bearer key."""

    def __init__(self, models: list[str], api_key: str = "", stall: bool = False) -> None:
        super().__init__(models, stall)
        self.api_key = api_key

    def _authorized(self, handler: _Handler) -> bool:
        if self.api_key and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            handler._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return False
        return True

    def get(self, handler: _Handler) -> None:
        if handler.path == "/v1/models" and self._authorized(handler):
            handler._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
        elif handler.path != "/v1/models":
            super().get(handler)

    def post(self, handler: _Handler, body: dict[str, Any]) -> None:
        if handler.path != "/v1/chat/completions":
            return super().post(handler, body)
        if not self._authorized(handler):
            return None
        if body.get("model") not in self.models:
            return handler._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist"}})
        stop = body.get("stop") or []
        chunks, delay, finish = self.plan(body["messages"], int(body.get("max_tokens") or 128),
                                          [stop] if isinstance(stop, str) else list(stop))

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def lines() -> Iterator[bytes]:
            yield event({"role": "assistant", "content": ""})
            if body.get("tools"):
                name = body["tools"][0]["function"]["name"]
                yield event({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]})
                for piece in ('{"x"', ": 1}"):
                    yield event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                yield event({}, "tool_calls")
                sent = 3
            else:
                for chunk in chunks:
                    time.sleep(delay)
                    yield event({"content": chunk})
                yield event({}, finish)
                sent = len(chunks)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 11, "completion_tokens": sent, "total_tokens": 11 + sent}
                yield b"data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                              "choices": [], "usage": usage}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        handler._stream("text/event-stream", lines())
