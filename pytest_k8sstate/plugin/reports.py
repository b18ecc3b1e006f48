"""What a failed test reports (pytest side of :mod:`.failure` and :mod:`.state`): report sections, the
artifacts (``report.html``: :mod:`pytest_k8sstate.report`), JUnit XML properties (``k8sstate_artifacts`` =
the test's artifact directory, and
``k8sstate_file_<name>`` per file) and ``[[ATTACHMENT|/abs/path]]`` lines in the test's captured stdout
(JUnit ``<system-out>`` with ``junit_logging = system-out``: the Jenkins JUnit attachments convention),
and each section as a pytest-html text extra when pytest-html is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_k8sstate.plugin.failure import (
    attachment_lines,
    component_logs,
    html_report,
    namespace_diagnostics,
)
from pytest_k8sstate.plugin.state import ClusterState, artifact_dir_for

if TYPE_CHECKING:
    from pytest_k8sstate.plugin.options import Settings

__all__ = ["ARTIFACTS_PROPERTY", "NAMESPACE_KEY", "STATE_KEY", "on_failure"]

STATE_KEY = pytest.StashKey[ClusterState]()
NAMESPACE_KEY = pytest.StashKey[tuple[Any, str]]()  # (api client, namespace) of the running test
ARTIFACTS_PROPERTY = "k8sstate_artifacts"


def on_failure(item: pytest.Item, report: pytest.TestReport, settings: Settings | None) -> None:
    """Snapshots, namespace diagnostics and (when unhealthy or asked) component logs of a failed test:
    report sections, artifacts, JUnit properties and ``[[ATTACHMENT|…]]`` lines, pytest-html extras."""
    if settings is None:
        return
    state = item.stash.get(STATE_KEY, None)
    ns = item.stash.get(NAMESPACE_KEY, None)
    if state is None and ns is None:
        return
    directory = artifact_dir_for(settings.artifacts, item.nodeid)
    files: list[Path] = []
    sections: list[tuple[str, str]] = []
    if state is not None:
        text = state.save_failure(directory)
        files.extend(state.artifacts)
        page, why = html_report(
            state.before, directory, title=f"k8sstate: {item.nodeid}", ignore=state.ignore
        )
        files.extend([page] if page is not None else [])
        logs = component_logs(state.cluster, directory, settings.component_logs)
        extra = "".join(f"\n{line}" for line in (f"report: {page}" if page else why, logs) if line)
        sections.append(("k8sstate", text + extra))
    if ns is not None:
        api, namespace = ns
        text, written = namespace_diagnostics(api, namespace, directory, log_lines=settings.log_lines)
        files.extend(written)
        sections.append(("k8sstate diagnostics", text))
    report.sections.extend(sections)
    if not files:
        return
    for prop in ((ARTIFACTS_PROPERTY, str(directory)), *((f"k8sstate_file_{p.name}", str(p)) for p in files)):
        item.user_properties.append(prop)  # the teardown report carries them into JUnit XML
        report.user_properties.append(prop)
    attachments = attachment_lines(files)
    item.add_report_section("teardown", "stdout", attachments)  # JUnit <system-out> (junit_logging)
    _html_extras(item, report, sections)


def _html_extras(item: pytest.Item, report: pytest.TestReport, sections: list[tuple[str, str]]) -> None:
    """pytest-html: each section as a text extra (when pytest-html is installed)."""
    html = item.config.pluginmanager.getplugin("html")
    extras_mod = getattr(html, "extras", None)
    if extras_mod is None:
        return
    extras = list(getattr(report, "extras", []) or [])
    for title, text in sections:
        extras.append(extras_mod.text(text, name=title))
    report.extras = extras  # type: ignore[attr-defined]
