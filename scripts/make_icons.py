#!/usr/bin/env python3
"""Draw the PWA icons (llmlab_grpc/frontend/icon-192.png, icon-512.png) from the same shapes as icon.svg.

Pure Python (zlib + struct), no imaging library: a rounded square with three connected
nodes, anti-aliased by pixel coverage from signed distances. Run it after changing the shapes.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "llmlab_grpc" / "frontend"
BACKGROUND = (20, 33, 61)
LINE = (229, 229, 229)
NODE = (252, 163, 17)
NODES = [(0.30, 0.68), (0.70, 0.68), (0.50, 0.30)]  # in units of the icon size
NODE_R = 0.095
LINE_W = 0.035
CORNER = 0.18


def _segment_distance(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def _rounded_square_distance(px: float, py: float) -> float:
    """Signed distance to the icon's rounded square (negative inside), in icon units."""
    qx = abs(px - 0.5) - (0.5 - CORNER)
    qy = abs(py - 0.5) - (0.5 - CORNER)
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - CORNER


def _mix(under: tuple[float, ...], over: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    return tuple(u * (1 - alpha) + o * alpha for u, o in zip(under, over, strict=False))


def render(size: int) -> bytes:
    px_unit = 1.0 / size
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter type 0
        for x in range(size):
            px, py = (x + 0.5) / size, (y + 0.5) / size
            coverage = lambda d: max(0.0, min(1.0, 0.5 - d / px_unit))  # noqa: E731
            color: tuple[float, ...] = (0.0, 0.0, 0.0)
            alpha = coverage(_rounded_square_distance(px, py))
            color = _mix(color, BACKGROUND, 1.0)
            edges = [(NODES[i], NODES[(i + 1) % 3]) for i in range(3)]
            line = max(coverage(_segment_distance(px, py, a, b) - LINE_W / 2) for a, b in edges)
            color = _mix(color, LINE, line)
            node = max(coverage(math.hypot(px - nx, py - ny) - NODE_R) for nx, ny in NODES)
            color = _mix(color, NODE, node)
            row += bytes(round(c) for c in color) + bytes([round(alpha * 255)])
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + chunk(b"IEND", b""))


def svg() -> str:
    s = 512
    lines = "".join(
        f'<line x1="{NODES[i][0] * s:g}" y1="{NODES[i][1] * s:g}" x2="{NODES[(i + 1) % 3][0] * s:g}" '
        f'y2="{NODES[(i + 1) % 3][1] * s:g}"/>' for i in range(3))
    circles = "".join(f'<circle cx="{x * s:g}" cy="{y * s:g}" r="{NODE_R * s:g}"/>' for x, y in NODES)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {s} {s}">'
            f'<rect width="{s}" height="{s}" rx="{CORNER * s:g}" fill="rgb{BACKGROUND}"/>'
            f'<g stroke="rgb{LINE}" stroke-width="{LINE_W * s:g}">{lines}</g>'
            f'<g fill="rgb{NODE}">{circles}</g></svg>\n')


if __name__ == "__main__":
    (OUT / "icon.svg").write_text(svg())
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(render(size))
        print(f"wrote {OUT / f'icon-{size}.png'}")
