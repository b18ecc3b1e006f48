"""The side-by-side CNI table: JUnit XML of finding runs → Markdown (``k8sstate findings cni-table``).

Each run's JUnit file holds, per finding test on a cluster with a CNI, the property ``k8sstate_footprint``
(:mod:`pytest_k8sstate.plugin.footprints`: the normalised node changes of
:mod:`pytest_k8sstate.state.footprint`, with the finding's number and title, CNI and proxy mode) and
``k8sstate_cluster`` (the cluster's create → ready time). :func:`read_runs` reads them; :func:`render_table`
writes one column per CNI × proxy mode and one row per finding, then a per-column summary (create → ready,
findings passed / skipped / failed); :func:`replace_between_markers` puts it into a document between
``<!-- cni-table:start -->`` and ``<!-- cni-table:end -->``.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError, ParseError
from pytest_k8sstate.state.footprint import CATEGORIES, Footprint, NodeFootprint

__all__ = [
    "END_MARKER",
    "START_MARKER",
    "Case",
    "Run",
    "read_runs",
    "render_table",
    "replace_between_markers",
]

START_MARKER = "<!-- cni-table:start -->"
END_MARKER = "<!-- cni-table:end -->"
CNI_ORDER = ("ptp", "bridge", "flannel", "flannel-host-gw", "kindnet")
MAX_ITEMS = 8
"""Items shown per node and category in a cell; the rest are counted."""


@dataclass
class Case:
    """One finding test of a run."""

    nodeid: str
    finding: str
    title: str
    outcome: str
    """``passed``, ``failed``, ``error`` or ``skipped``."""
    reason: str = ""
    column: tuple[str, str] | None = None
    """``(cni, proxy mode)`` of its cluster, when it recorded one."""
    footprint: Footprint | None = None
    """Of the test's last diff."""
    steps: list[Footprint] = field(default_factory=list)
    """Of each of its diffs, when it took more than one."""
    error: str = ""


@dataclass
class Run:
    """One JUnit file: its finding tests and the clusters they ran on."""

    path: str
    cases: list[Case] = field(default_factory=list)
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Cluster name → the ``k8sstate_cluster`` property."""


def _props(case: ET.Element) -> list[tuple[str, str]]:
    return [
        (str(p.get("name")), str(p.get("value", "")))
        for props in case.findall("properties")
        for p in props.findall("property")
    ]


def _json(path: str, name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ParseError(path, None, f"the JSON of property {name}", f"{text[:60]!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ParseError(path, None, f"a JSON object in property {name}", type(value).__name__)
    return value


def _finding(text: str) -> tuple[str, str] | None:
    """The ``k8sstate_finding`` property as JUnit writes it: ``['26', 'title']``."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return str(value[0]), str(value[1])
    return None


def _outcome(case: ET.Element) -> tuple[str, str]:
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        el = case.find(tag)
        if el is not None:
            reason = str(el.get("message") or "").removeprefix("Skipped: ")
            return outcome, " ".join(reason.split())[:200]
    return "passed", ""


def read_run(path: str) -> Run:
    """The finding tests of one JUnit XML file (ConfigError/ParseError naming the file)."""
    from pytest_k8sstate.util.inputs import read_input

    p = Path(path)
    if path != "-" and not p.is_file():
        raise ConfigError(f"{path}: no such file; give the JUnit XML a run wrote with --junitxml")
    data = read_input(path, "JUnit XML")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # pytest writes none; entities could expand without bound
        expected = "JUnit XML without a DOCTYPE or entity declarations"
        raise ParseError(path, None, expected, "<!DOCTYPE/<!ENTITY")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ParseError(path, exc.position[0], "JUnit XML (pytest --junitxml)", str(exc)) from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ParseError(
            path, None, "a <testsuites> or <testsuite> root (pytest --junitxml)", f"<{root.tag}>"
        )
    run = Run(path)
    for case in root.iter("testcase"):
        props = _props(case)
        finding = next((f for n, v in props if n == "k8sstate_finding" for f in [_finding(v)] if f), None)
        if finding is None:
            continue
        outcome, reason = _outcome(case)
        nodeid = f"{case.get('classname', '')}::{case.get('name', '')}"
        c = Case(nodeid, finding[0], finding[1], outcome, reason)
        for name, value in props:
            if name == "k8sstate_cluster":
                about = _json(path, name, value)
                run.clusters[str(about.get("name"))] = about
            elif name == "k8sstate_footprint":
                record = _json(path, name, value)
                c.column = (str(record.get("cni") or "none"), str(record.get("proxy_mode") or "?"))
                if record.get("error") or record.get("note"):
                    c.error = str(record.get("error") or record.get("note"))
                else:
                    where = f"{path}: {c.nodeid}: k8sstate_footprint"
                    c.footprint = Footprint.from_json(record, where)
                    steps = record.get("steps") or []
                    if not isinstance(steps, list):
                        raise ParseError(path, None, f"{c.nodeid}: steps: a list", type(steps).__name__)
                    c.steps = [
                        Footprint.from_json({"nodes": st}, f"{where}: step {i + 1}")
                        for i, st in enumerate(steps)
                    ]
        run.cases.append(c)
    return run


def read_runs(paths: Sequence[str]) -> list[Run]:
    """Every file's run; ConfigError when none of them recorded a footprint."""
    if not paths:
        raise ConfigError("no JUnit file given; pass the XML files of the runs (pytest --junitxml=FILE)")
    runs = [read_run(p) for p in paths]
    if not any(c.column for r in runs for c in r.cases):
        raise ConfigError(
            f"{', '.join(paths)}: no k8sstate_footprint property in any test case; run the finding tests "
            "on a cluster with a CNI (--k8sstate-provider kind) or with --k8sstate-footprint, "
            "with --junitxml"
        )
    return runs


def _column_key(col: tuple[str, str]) -> tuple[int, str, str]:
    cni, mode = col
    return (CNI_ORDER.index(cni) if cni in CNI_ORDER else len(CNI_ORDER), cni, mode)


def _number_key(number: str) -> tuple[int, str]:
    m = re.match(r"\d+", number)
    return (int(m.group()) if m else 10**9, number)


def _main_column(run: Run) -> tuple[str, str] | None:
    cols = Counter(c.column for c in run.cases if c.column)
    return cols.most_common(1)[0][0] if cols else None


def _cell_text(text: str) -> str:
    """Markdown-safe inline code (``|`` escaped for the table; backticks doubled away)."""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _node_lines(nf: NodeFootprint) -> list[str]:
    signs = {"added": "+", "removed": "−", "changed": "~"}
    out: list[str] = []
    for cat in CATEGORIES:
        for change in ("added", "removed", "changed"):
            items = nf.items(cat, change)
            noun = cat.replace("nft_", "nft ").removesuffix("s")
            for text, count in items[:MAX_ITEMS]:
                times = f" ×{count}" if count > 1 else ""
                out.append(f"{signs[change]}{noun} {_cell_text(text)}{times}")
            if len(items) > MAX_ITEMS:
                out.append(f"{signs[change]}{len(items) - MAX_ITEMS} more {noun}s")
    return out


def _footprint_text(fp: Footprint) -> str:
    if not fp:
        return "no node change"
    return "<br>".join(f"**{node}**: " + "<br>".join(_node_lines(nf)) for node, nf in fp.nodes.items())


def _cell(cases: Sequence[Case]) -> str:
    parts: list[str] = []
    for c in cases:
        head = f"*{c.nodeid.rsplit('::', 1)[-1]}*: " if len(cases) > 1 else ""
        if c.outcome == "skipped":
            parts.append(f"{head}skipped: {c.reason}".replace("|", "\\|"))
            continue
        status = "" if c.outcome == "passed" else f"**{c.outcome}** "
        if c.error:
            parts.append(f"{head}{status}footprint not computed: {c.error}".replace("|", "\\|"))
        elif c.footprint is None:
            parts.append(f"{head}{status}not recorded")
        elif len(c.steps) > 1:
            steps = [f"*diff {i + 1}*: {_footprint_text(fp)}" for i, fp in enumerate(c.steps)]
            parts.append(head + status + "<br>".join(steps))
        else:
            parts.append(head + status + _footprint_text(c.footprint))
    return "<br>".join(parts) if parts else "not run"


def _row_title(titles: Sequence[str]) -> str:
    split = [t.replace(":", " :").split() for t in titles]
    common: list[str] = []
    for words in zip(*split, strict=False):
        if len(set(words)) != 1:
            break
        common.append(words[0])
    text = " ".join(common).replace(" :", ":").rstrip(":,; ")
    return (
        text if len(split) > 1 and len(text) >= 8 else (next(iter(titles), "") if len(split) == 1 else text)
    )


def render_table(runs: Sequence[Run]) -> str:
    """The Markdown of the CNI table and the per-column summary (no markers)."""
    cells: dict[tuple[str, tuple[str, str]], list[Case]] = {}
    titles: dict[str, list[str]] = {}
    for run in runs:
        main = _main_column(run)
        for c in run.cases:
            col = c.column or main
            if col is None:
                continue
            if (
                c.outcome == "skipped"
                and c.column is None
                and any(x.finding == c.finding and x.column == col for x in run.cases)
            ):
                continue  # another CNI's variant of a finding this run recorded
            cells.setdefault((c.finding, col), []).append(c)
            if c.title not in titles.setdefault(c.finding, []):
                titles[c.finding].append(c.title)
    columns = sorted({col for _, col in cells}, key=_column_key)
    # rows: findings that recorded a footprint property in at least one run
    findings = sorted(
        {f for (f, _), cs in cells.items() if any(c.column is not None for c in cs)}, key=_number_key
    )
    head = "| # | step | " + " | ".join(f"{cni} × {mode}" for cni, mode in columns) + " |"
    lines = [head, "|---|---|" + "---|" * len(columns)]
    for f in findings:
        row = [f, _row_title(titles[f]).replace("|", "\\|")]
        row += [_cell(cells.get((f, col), [])) for col in columns]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", _summary(runs, columns)]
    return "\n".join(lines) + "\n"


def _summary(runs: Sequence[Run], columns: Sequence[tuple[str, str]]) -> str:
    lines = [
        "| CNI × proxy mode | create → ready | findings passed / skipped / failed | run |",
        "|---|---|---|---|",
    ]
    for col in columns:
        times: list[str] = []
        counts: Counter[str] = Counter()
        files: list[str] = []
        for run in runs:
            main = _main_column(run)
            mine = [c for c in run.cases if (c.column or main) == col]
            if not mine:
                continue
            files.append(Path(run.path).name)
            counts.update("failed" if c.outcome == "error" else c.outcome for c in mine)
            for about in run.clusters.values():
                if (str(about.get("cni") or "none"), str(about.get("proxy_mode"))) != col:
                    continue
                secs = about.get("create_seconds")
                nodes = about.get("nodes")
                if isinstance(secs, (int, float)):
                    reuse = " (reused)" if about.get("reuse_requested") else ""
                    times.append(f"{secs:.0f} s ({nodes} nodes){reuse}")
        tally = f"{counts['passed']} / {counts['skipped']} / {counts['failed']}"
        lines.append(
            f"| {col[0]} × {col[1]} | {', '.join(times) or '—'} | {tally} | {', '.join(sorted(set(files)))} |"
        )
    return "\n".join(lines)


def replace_between_markers(document: str, table: str, *, where: str) -> str:
    """``document`` with the text between the markers replaced by ``table`` (ConfigError naming ``where``
    when the markers are missing, repeated or out of order)."""
    starts, ends = document.count(START_MARKER), document.count(END_MARKER)
    if starts != 1 or ends != 1 or document.index(START_MARKER) > document.index(END_MARKER):
        raise ConfigError(
            f"{where}: needs exactly one {START_MARKER} line followed by one {END_MARKER} line "
            f"(found {starts} start, {ends} end); add them where the table belongs"
        )
    before, rest = document.split(START_MARKER, 1)
    _, after = rest.split(END_MARKER, 1)
    return f"{before}{START_MARKER}\n{table.rstrip()}\n{END_MARKER}{after}"
