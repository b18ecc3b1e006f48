"""The findings table: the outcome of every ``finding``-marked test, printed at the end of the run."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

__all__ = ["FINDING_PROPERTY", "FindingResult", "FindingsCollector", "format_findings"]

FINDING_PROPERTY = "k8sstate_finding"


@dataclass
class FindingResult:
    number: str
    title: str
    nodeid: str
    outcome: str = "not run"
    reason: str = ""
    phases: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.outcome}: {self.reason}" if self.reason else self.outcome


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


class FindingsCollector:
    """Collects the outcome of every ``finding``-marked test (also from xdist workers' reports)."""

    def __init__(self) -> None:
        self.results: dict[str, FindingResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        finding: Any = next((v for k, v in report.user_properties if k == FINDING_PROPERTY), None)
        if not isinstance(finding, (list, tuple)) or len(finding) != 2:
            return
        number, title = finding
        result = self.results.setdefault(report.nodeid, FindingResult(str(number), str(title), report.nodeid))
        result.phases.append(report.when or "")
        if hasattr(report, "wasxfail"):
            result.outcome, result.reason = ("xfailed" if report.skipped else "xpassed"), str(report.wasxfail)
        elif report.skipped:
            result.outcome, result.reason = "skipped", _skip_reason(report)
        elif report.failed:
            if report.when == "call":
                result.outcome, result.reason = "failed", ""
            elif result.outcome != "failed":
                result.outcome, result.reason = "error", f"in {report.when}"
        elif report.when == "call" and result.outcome == "not run":
            result.outcome = "passed"


def _number_key(number: str) -> tuple[int, str]:
    match = re.match(r"\d+", number)
    return (int(match.group()) if match else 10**9, number)


def format_findings(results: Mapping[str, FindingResult]) -> list[str]:
    """The findings table as lines (sorted by finding number)."""
    rows = sorted(results.values(), key=lambda r: (_number_key(r.number), r.nodeid))
    width = max((len(r.number) for r in rows), default=1)
    title_width = min(max((len(_row_title(r)) for r in rows), default=7), 70)
    lines = [f"{'#':>{width}}  {'finding':<{title_width}}  result"]
    for r in rows:
        title = _row_title(r)
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        lines.append(f"{r.number:>{width}}  {title:<{title_width}}  {r.describe()}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    lines.append(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    return lines


def _row_title(result: FindingResult) -> str:
    param = re.search(r"\[(.*)\]$", result.nodeid)
    return f"{result.title} [{param.group(1)}]" if param else result.title
