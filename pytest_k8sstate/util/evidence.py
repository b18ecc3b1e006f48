"""Evidence a check recorded while a test ran (e.g. traced vs observed traffic), for the test report.

The core records (pytest-free: :func:`record`); the plugin drains it around each test
(:func:`drain`) and shows it in a report section and an artifact. Process-wide and thread-safe; a
record is ``(kind, title, text)``. With nobody draining, at most :data:`MAX_RECORDS` are kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["MAX_RECORDS", "Evidence", "drain", "record"]

MAX_RECORDS = 200
_lock = threading.Lock()
_records: list[Evidence] = []


@dataclass(frozen=True)
class Evidence:
    kind: str  # e.g. "traffic"
    title: str
    text: str
    passed: bool = True


def record(kind: str, title: str, text: str, *, passed: bool = True) -> None:
    with _lock:
        _records.append(Evidence(kind, title, text, passed))
        del _records[:-MAX_RECORDS]


def drain(kind: str | None = None) -> list[Evidence]:
    """Remove and return the records (of ``kind``, or all), oldest first."""
    with _lock:
        taken = [r for r in _records if kind is None or r.kind == kind]
        _records[:] = [r for r in _records if not (kind is None or r.kind == kind)]
    return taken
