"""Pure ``assert_*`` helpers over snapshots and diffs (usable without pytest)."""

from __future__ import annotations

from pytest_k8sstate.assertions.dataplane import *  # noqa: F403
