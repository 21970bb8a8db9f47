"""``MethodTable``: every method a node serves, resolved once, authenticated on every call.

Why not server interceptors and the generated ``add_*_to_server``: grpc.aio (1.6x+) keeps
one pending "next call" future per *registered* method and runs ``asyncio.wait`` over all
of them for every call it accepts, so a node serving 15-25 methods paid for 15-25 futures
on each RPC; each interceptor is one more coroutine per call on top. A node instead hands
grpc a single generic handler (this table): one pending future, and per call one dict
lookup and the bearer check, both synchronous. The handlers are built when the node
starts (``wrap`` adds the metrics), so nothing per call is rebuilt.

Security is unchanged: every method except health checking and reflection
(``OPEN_METHOD_PREFIXES``) needs ``authorization: Bearer <mesh secret>``, compared in
constant time; a call without it gets a handler of the same streaming shape that fails
with UNAUTHENTICATED, itself wrapped, so refused calls are counted too. A method name the
table does not hold gets UNIMPLEMENTED from grpc and creates nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from llmlab_grpc.mesh.auth import OPEN_METHOD_PREFIXES, aborting_handler

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # a string: grpc's classes are generic in its stubs only
"""The handler of any method: the table holds every method of every service."""
Wrap = Callable[[str, Handler], Handler]
"""``(full method name, handler) -> handler``: applied once per method (and per refusal)."""

MISSING_SECRET = "missing mesh secret: send metadata 'authorization: Bearer <secret>'"
WRONG_SECRET = "wrong mesh secret in 'authorization' metadata"


@dataclass(frozen=True)
class _Method:
    """One served method: its handler and, unless open, the two ready-made refusals."""

    handler: Handler
    open: bool
    missing: Handler | None
    wrong: Handler | None


class _Registrar:
    """What ``add_*Servicer_to_server`` needs of a server: it records into the table instead."""

    def __init__(self, table: MethodTable) -> None:
        self._table = table

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._table.add(f"/{service}/{name}", handler)

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Generated code registers each method both ways; the named ones above are kept."""


class MethodTable(grpc.GenericRpcHandler):
    """The node's one generic handler. Fill it with ``add_servicer`` before the server starts."""

    def __init__(self, secret: str, wrap: Wrap | None = None) -> None:
        self._expected = f"Bearer {secret}".encode()
        self._wrap: Wrap = wrap or (lambda _method, handler: handler)
        self._methods: dict[str, _Method] = {}

    def add_servicer(self, add_to_server: Callable[[Any, Any], None], servicer: Any) -> None:
        """Record a servicer through its generated ``add_<Service>Servicer_to_server``."""
        before = len(self._methods)
        add_to_server(servicer, _Registrar(self))
        if len(self._methods) == before:  # code generated before grpcio-tools 1.62 names none
            raise ValueError(f"{getattr(add_to_server, '__name__', add_to_server)} registered no named methods: "
                             "regenerate it (scripts/gen_protos) or add its handlers with MethodTable.add")

    def add(self, method: str, handler: Handler) -> None:
        """Serve ``handler`` as ``method`` (``/package.Service/Method``)."""
        if method in self._methods:
            raise ValueError(f"{method} is registered twice")
        is_open = method.startswith(OPEN_METHOD_PREFIXES)
        self._methods[method] = _Method(
            handler=self._wrap(method, handler),
            open=is_open,
            missing=None if is_open else self._wrap(
                method, aborting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, MISSING_SECRET)),
            wrong=None if is_open else self._wrap(
                method, aborting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, WRONG_SECRET)),
        )

    @property
    def methods(self) -> list[str]:
        return list(self._methods)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        served = self._methods.get(handler_call_details.method)
        if served is None:
            return None  # grpc answers UNIMPLEMENTED
        if served.open:
            return served.handler
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                if not value:
                    break
                given = value.encode(errors="replace") if isinstance(value, str) else value
                return served.handler if hmac.compare_digest(given, self._expected) else served.wrong
        return served.missing
