"""The one peer-call policy: which node to call first, which failures move on to the next.

Every "call a peer, fail over to the next" in llmlab goes through ``PeerCalls``: the
planner's tool, cache and model calls, the OpenAI gateway's ``Planner.AskStream``, the
tool router and the bridge's mobile tool executor. So the rules are written once:

**Ranking** (``PeerCalls.rank``). Candidates are the nodes that serve the thing asked
for (a role, a model, a tool); the caller builds them from the peer table, which never
lists a ``one-way`` peer. Nodes that are *suspect* (the peer table has not reached them
for one heartbeat interval and a half, or a call of ours failed on them in the last
``SUSPECT_FOR_S``) go after every healthy one: last resort, not excluded, because with
one llm node a blip would otherwise become ``SUSPECT_FOR_S`` of outage. Among the
healthy ones: this node first where it serves the thing (no hop), then the least
loaded (the larger of what the node reported and the calls this policy has in flight
there), then by name. For llm generation (``spread=True``) the order is instead the
expected wait of ``mesh/spreading.py`` (queue and measured speed), this node winning
ties.

**Retryable codes** (``RETRYABLE_CODES``): UNAVAILABLE (the node is gone, unreachable,
draining or lost its phone), DEADLINE_EXCEEDED (it did not answer in time: stalled,
paused, overloaded) and RESOURCE_EXHAUSTED (it is out of capacity: queue full, rate
limited). Each says "this node cannot do it now", and another may (``retryable``); the
one exception is gRPC's own RESOURCE_EXHAUSTED for a message over a size limit, which
every node would refuse alike. Every other code is
the answer: INVALID_ARGUMENT or NOT_FOUND would be the same elsewhere, UNAUTHENTICATED is
a configuration error, and retrying them would only hide it. Tool results carry the code
as a name, hence ``RETRYABLE_NAMES``. A caller with a deadline of its own passes
``until``: once it has passed nothing more is tried.

**Streams** (``PeerCalls.stream``) fail over only while nothing has been delivered (a
token, an event): after that, switching nodes would splice two answers, so a failure is
the caller's error (``PeerCallError.mid_stream``). ``silence_s`` bounds each wait for the
next message; a node silent before its first one is left for the next (the planner's
``--first-token-timeout``).

**The trace**: every node left behind is a ``Failover`` (who, the code, why); callers copy
the node ids into the ``failed_over`` fields of their replies and steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from llmlab_grpc.mesh.peers import PeerRecord
from llmlab_grpc.mesh.spreading import LlmLoad, spread_order
from llmlab_grpc.proto.llmlab.v1 import common_pb2

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
})
"""The status codes on which a call moves to the next candidate (see the module docstring)."""
RETRYABLE_NAMES: frozenset[str] = frozenset(code.name for code in RETRYABLE_CODES)
"""The same codes by name, as tool errors (``ToolError.code``, ``ToolFailure.code``) carry them."""
TOO_LARGE = "larger than max"
"""In gRPC's own RESOURCE_EXHAUSTED for a message over a size limit ("Received message larger than
max (N vs. M)"): every node has the same limits (``limits.py``), so that one is never retried."""
SUSPECT_FOR_S = 10.0
"""A node that just failed a call is tried last for this long (heartbeats drop it if it is dead)."""
MAX_WHY_CHARS = 200
"""Characters of a node's error message kept in a failover note."""

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A node that can take a call. ``busy`` is the load it reported; ``stale`` its peer state is not ALIVE."""

    node_id: str
    name: str
    address: str = ""
    local: bool = False
    busy: int = 0
    speed: float = 0.0
    """Measured tokens/s (llm candidates), 0 when unknown."""
    stale: bool = False


def peer_candidate(record: PeerRecord, busy: int = 0, speed: float = 0.0, *, interval_s: float,
                   now: float | None = None) -> Candidate:
    """A candidate for a peer-table row; ``stale`` from its state at ``now``."""
    state = record.state(time.monotonic() if now is None else now, interval_s)
    return Candidate(record.node_id, record.info.name, record.address, busy=busy, speed=speed,
                     stale=state != common_pb2.PEER_STATE_ALIVE)


def role_candidates(peers: Iterable[PeerRecord], role: str, *, here: Candidate | None, interval_s: float,
                    model: str = "") -> list[Candidate]:
    """``here`` (this node, when it serves the thing) and the gRPC peers with ``role`` (and ``model``), unranked.

    A peer's ``busy`` is its reported running generations for ``llm`` (what the spreading
    score wants) and its calls in flight otherwise; mobile nodes are reached only by tool.
    """
    found = [here] if here is not None else []
    now = time.monotonic()
    for peer in peers:
        if role not in peer.info.roles or peer.info.kind == common_pb2.NODE_KIND_MOBILE or not peer.address \
                or (model and model not in peer.info.models):
            continue
        busy = peer.load.generations_running if role == "llm" else peer.load.in_flight
        found.append(peer_candidate(peer, busy, peer.load.tokens_per_second, interval_s=interval_s, now=now))
    return found


@dataclass
class Failover:
    """A node a call left for the next one, and why (shown in traces and error messages).

    ``why`` is a status ("UNAVAILABLE: connection refused") or, for a node that went
    silent, a phrase ("sent no first token within 20 s"), which ``describe`` reads on.
    """

    node_id: str
    name: str
    code: grpc.StatusCode
    why: str
    what: str = "node"
    """What the node was to the caller ("llm node", "planner node"), for ``describe``."""

    def describe(self) -> str:
        sep = " " if self.why.startswith("sent ") else ": "
        return f"{self.what} {self.name}{sep}{self.why}"


def describe_all(failed_over: Iterable[Failover]) -> str:
    """Failover notes joined for one message."""
    return "; ".join(f.describe() for f in failed_over)


class Retry(Exception):
    """Raised by an attempt: this candidate cannot do it now, try the next (a failure that is not an RPC error).

    ``record=False`` moves on without a ``failed_over`` entry or suspicion (the node simply
    no longer has the thing, e.g. a tool removed since its last heartbeat).
    """

    def __init__(self, why: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, record: bool = True) -> None:
        super().__init__(why)
        self.why = why
        self.code = code
        self.record = record


class PeerCallError(Exception):
    """A call that failing over cannot fix.

    ``exhausted``: every candidate failed with a retryable code (``code`` is the last one's);
    else ``candidate`` answered a non-retryable ``code`` or, with ``mid_stream``, failed after
    part of a stream was delivered (``silent``: it stopped sending for ``silence_s``).
    """

    def __init__(self, code: grpc.StatusCode, details: str, *, candidate: Candidate | None = None,
                 failed_over: Sequence[Failover] = (), exhausted: bool = False, mid_stream: bool = False,
                 silent: bool = False) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.candidate = candidate
        self.failed_over = list(failed_over)
        self.exhausted = exhausted
        self.mid_stream = mid_stream
        self.silent = silent

    def tried(self) -> str:
        """The failover notes, for a message ("llm node a: UNAVAILABLE: ...; llm node b sent ...")."""
        return describe_all(self.failed_over)


class StreamCall(Protocol):
    """What ``PeerCalls.stream`` needs of a call: a gRPC aio stream-stream/unary-stream call has it."""

    async def read(self) -> Any: ...

    def cancel(self) -> bool: ...


@dataclass
class PeerCalls:
    """Ranking and failover for one caller (a planner, a gateway, a router), with its own in-flight counts."""

    what: str = "node"
    """What a candidate is to this caller, in messages ("llm node", "tools node"); ``what=`` per call overrides it."""
    clock: Callable[[], float] = time.monotonic
    suspects: dict[str, float] = field(default_factory=dict)
    """node_id -> when a call of ours last failed on it."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """node_id -> calls this caller has running there now (live, unlike heartbeats)."""

    # -- ranking --------------------------------------------------------------------------
    def suspect(self, node_id: str) -> None:
        """Rank ``node_id`` last for ``SUSPECT_FOR_S``."""
        now = self.clock()
        self.suspects[node_id] = now
        for stale in [n for n, at in self.suspects.items() if now - at >= SUSPECT_FOR_S]:
            del self.suspects[stale]  # bounded by the nodes that failed us lately

    def is_suspect(self, candidate: Candidate, now: float | None = None) -> bool:
        at = self.suspects.get(candidate.node_id)
        recent = at is not None and (self.clock() if now is None else now) - at < SUSPECT_FOR_S
        return candidate.stale or recent

    def busy(self, candidate: Candidate) -> int:
        """The node's queue as this caller sees it: its report, or our own calls there if more."""
        return max(candidate.busy, self.in_flight.get(candidate.node_id, 0))

    def rank(self, candidates: Iterable[Candidate], *, spread: bool = False) -> list[Candidate]:
        """Healthy before suspect; then this node, least busy, name (or, with ``spread``, expected wait)."""
        found = list(candidates)
        now = self.clock()
        if spread:
            order = spread_order([LlmLoad(self.busy(c), c.speed, c.local) for c in found])
            return sorted((found[i] for i in order), key=lambda c: self.is_suspect(c, now))  # stable
        return sorted(found, key=lambda c: (self.is_suspect(c, now), not c.local, self.busy(c), c.name))

    def _in_time(self, candidates: Iterable[Candidate], spread: bool, until: float | None) -> Iterator[Candidate]:
        """``rank``'s order, until the deadline ``until`` (``loop.time()`` terms) passes."""
        for cand in self.rank(candidates, spread=spread):
            if until is not None and _now() >= until:
                return
            yield cand

    def started(self, node_id: str) -> None:
        """A call to ``node_id`` began (counted in its rank until ``finished``)."""
        self.in_flight[node_id] = self.in_flight.get(node_id, 0) + 1

    def finished(self, node_id: str) -> None:
        left = self.in_flight.get(node_id, 0) - 1
        if left > 0:
            self.in_flight[node_id] = left
        else:
            self.in_flight.pop(node_id, None)  # bounded: only nodes with calls running are kept

    def _left(self, candidate: Candidate, code: grpc.StatusCode, why: str, failed_over: list[Failover],
              what: str) -> Failover:
        self.suspect(candidate.node_id)
        note = Failover(candidate.node_id, candidate.name, code, why, what)
        failed_over.append(note)
        log.warning("%s; trying the next one", note.describe())
        return note

    def _give_up(self, failed_over: list[Failover], last: Failover | None, until: float | None,
                 what: str) -> PeerCallError:
        if until is not None and _now() >= until:
            return PeerCallError(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed after trying: "
                                 f"{describe_all(failed_over) or 'no ' + what}",
                                 failed_over=failed_over, exhausted=True)
        if last is None:
            return PeerCallError(grpc.StatusCode.UNAVAILABLE, f"no {what} is alive to take the call",
                                 failed_over=failed_over, exhausted=True)
        return PeerCallError(last.code, f"every {what} failed: {describe_all(failed_over)}",
                             failed_over=failed_over, exhausted=True)

    # -- unary calls ----------------------------------------------------------------------
    async def call(self, candidates: Iterable[Candidate], attempt: Callable[[Candidate], Awaitable[T]], *,
                   spread: bool = False, until: float | None = None,
                   failed_over: list[Failover] | None = None, what: str = ""
                   ) -> tuple[T, Candidate, list[Failover]]:
        """``attempt`` on each candidate in rank order until one answers: (answer, who, failovers).

        An ``AioRpcError`` with a retryable code or a ``Retry`` moves on; any other RPC
        error raises ``PeerCallError`` with its code; other exceptions propagate as they
        are. ``until`` is a deadline in ``loop.time()`` terms.
        """
        failed = failed_over if failed_over is not None else []
        what = what or self.what
        last: Failover | None = None
        for cand in self._in_time(candidates, spread, until):
            self.started(cand.node_id)
            try:
                answer = await attempt(cand)
            except Retry as exc:
                if exc.record:
                    last = self._left(cand, exc.code, exc.why[:MAX_WHY_CHARS], failed, what)
                continue
            except grpc.aio.AioRpcError as err:
                if retryable(err):
                    last = self._left(cand, err.code(), _why(err), failed, what)
                    continue
                raise PeerCallError(err.code(), err.details() or err.code().name, candidate=cand,
                                    failed_over=failed) from err
            finally:
                self.finished(cand.node_id)
            return answer, cand, failed
        raise self._give_up(failed, last, until, what)

    # -- streams --------------------------------------------------------------------------
    async def stream(self, candidates: Iterable[Candidate], open_call: Callable[[Candidate], StreamCall], *,
                     spread: bool = False, silence_s: float | None = None, first: str = "message",
                     silence_flag: str = "", until: float | None = None,
                     failed_over: list[Failover] | None = None, what: str = ""
                     ) -> AsyncGenerator[tuple[Candidate, Any], None]:
        """Yield (candidate, message) from the first candidate whose stream delivers; fail over before that.

        Retryable errors, ``silence_s`` without a first message, and a stream that is cut
        before delivering, move on (each a ``Failover`` in ``failed_over``); after the
        first message every failure raises ``PeerCallError(mid_stream=True)``. The call
        is cancelled when the consumer stops early (its work stops with it).
        """
        failed = failed_over if failed_over is not None else []
        what = what or self.what
        last: Failover | None = None
        for cand in self._in_time(candidates, spread, until):
            call = open_call(cand)
            received = False
            self.started(cand.node_id)
            try:
                while True:
                    message = await (call.read() if silence_s is None else asyncio.wait_for(call.read(), silence_s))
                    if message is grpc.aio.EOF:
                        return
                    received = True
                    yield cand, message
            except TimeoutError as err:
                assert silence_s is not None
                flag = f" ({silence_flag})" if silence_flag else ""
                if received:
                    self.suspect(cand.node_id)
                    raise PeerCallError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                        f"{what} {cand.name} went silent mid-answer (nothing for "
                                        f"{silence_s:g} s{', ' + silence_flag if silence_flag else ''})",
                                        candidate=cand, failed_over=failed, mid_stream=True, silent=True) from err
                last = self._left(cand, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"sent no first {first} within {silence_s:g} s{flag}", failed, what)
            except grpc.aio.AioRpcError as err:
                if received:
                    self.suspect(cand.node_id)
                    raise PeerCallError(err.code(), err.details() or err.code().name, candidate=cand,
                                        failed_over=failed, mid_stream=True) from err
                if not retryable(err):
                    raise PeerCallError(err.code(), err.details() or err.code().name, candidate=cand,
                                        failed_over=failed) from err
                last = self._left(cand, err.code(), _why(err), failed, what)
            finally:
                call.cancel()
                self.finished(cand.node_id)
        raise self._give_up(failed, last, until, what)


def retryable(err: grpc.aio.AioRpcError) -> bool:
    """Whether another node may do what this one refused: a retryable code, not a size refusal."""
    return err.code() in RETRYABLE_CODES and TOO_LARGE not in (err.details() or "")


def _why(err: grpc.aio.AioRpcError) -> str:
    return f"{err.code().name}: {(err.details() or '')[:MAX_WHY_CHARS]}"


def _now() -> float:
    """The running loop's clock, in which callers' ``until`` deadlines are set."""
    return asyncio.get_running_loop().time()
