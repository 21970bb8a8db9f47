"""LAN tests need root and nftables; elsewhere they are skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lan.harness import skip_reason

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))
