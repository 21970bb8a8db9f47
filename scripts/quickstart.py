"""Start a local mesh (`llmlab up`), wait for `ready`, show it, ask it, keep it running.

``--once`` stops the mesh after the first answers (used to check the quick start).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
FIRST_QUESTIONS: list[str] = ["What is 25 * 67?", "Tell me a joke"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--once", action="store_true", help="stop after the first answers")
    opts = parser.parse_args()
    llmlab = str(VENV_BIN / "llmlab")
    up = subprocess.Popen([llmlab, "up", "--nodes", str(opts.nodes)], stdout=subprocess.PIPE, text=True)
    assert up.stdout is not None
    for line in up.stdout:
        print(line, end="", flush=True)
        if line.strip() == "ready":
            break
    else:
        return up.wait() or 1
    status = 0
    try:
        subprocess.run([llmlab, "peers"], check=True)
        for question in FIRST_QUESTIONS:
            print(f"\n$ llmlab ask {question!r}", flush=True)
            status |= subprocess.run([llmlab, "ask", question, "--trace"]).returncode
        if opts.once:
            return status
        print("\nThe mesh is running; try `.venv/bin/llmlab peers` in another shell. Ctrl-C stops it.", flush=True)
        up.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            for line in up.stdout:
                print(line, end="", flush=True)
            up.wait(timeout=30)
    return status


if __name__ == "__main__":
    sys.exit(main())
