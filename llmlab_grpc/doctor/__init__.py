"""``llmlab doctor``: why a LAN mesh does not form, in checks a person can act on.

Each check has a verdict (``ok``, ``warn``, ``fail``), one line of detail and, unless
it is ok, one line saying what to do. ``host.py`` holds the checks that need no running
node (interfaces, multicast, ports: ``--offline``); ``scan.py`` browses mDNS the way a
node does; ``node.py`` asks a node and the peers it lists. The exo project's users report
these exact failures as their top problems: hosts that never see each other, the wrong
interface chosen, one-way discovery, Wi-Fi client isolation, two machines with one id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

VERDICTS = ("ok", "warn", "fail")


@dataclass(frozen=True)
class Check:
    """The result of one check."""

    name: str
    verdict: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def worst(checks: list[Check]) -> str:
    return max((c.verdict for c in checks), key=VERDICTS.index, default="ok")
