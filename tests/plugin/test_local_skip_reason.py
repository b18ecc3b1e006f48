"""Which conditions skip the local-cluster tests: the expected ones only; a bug errors them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Check = Callable[[], "str | None"]


def test_missing_binaries_are_a_skip_reason(
    local_unavailable: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("pytest_k8sstate.binaries.find_binary", lambda name, versions: None)
    reason = local_unavailable()
    assert reason is not None
    assert reason.startswith("binaries not installed: kube-apiserver")
    assert "kwok" in reason


def test_a_bug_in_the_binaries_lookup_errors_instead_of_skipping(
    local_unavailable: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, versions: Any) -> Path | None:
        raise RuntimeError("a bug in find_binary")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("pytest_k8sstate.binaries.find_binary", broken)
    with pytest.raises(RuntimeError, match="a bug in find_binary"):
        local_unavailable()
