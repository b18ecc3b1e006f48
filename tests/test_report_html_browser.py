"""The HTML report rendered by a real browser (headless Chromium): assertions on the DOM Chromium built
and on a screenshot, not on the HTML text."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_browser import chromium_missing, dump_dom, ink_fraction, screenshot
from report_fixtures import HOSTILE, NODE, snapshots

from pytest_k8sstate.report import write_report

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    before, after = snapshots()
    return write_report(tmp_path_factory.mktemp("report") / "diff.html", before, after)


def test_the_browser_draws_the_three_endpoint_graph(page: Path, tmp_path: Path) -> None:
    dom = dump_dom(page, tmp_path / "profile")
    (web,) = [s for s in dom.find_all("section", "service") if s.attrs["data-service"] == "default/web:http"]
    assert web.attrs["data-node"] == NODE
    (svg,) = web.find_all("svg")
    nodes = {g.attrs["data-id"]: g for g in svg.find_all("g", "node")}
    assert {"nat/PREROUTING", "nat/KUBE-SERVICES"} <= set(nodes)
    endpoints = {i: g.text for i, g in nodes.items() if "endpoint" in g.classes}
    assert set(endpoints) == {
        "endpoint:10.244.1.2:8080",
        "endpoint:10.244.1.3:8080",
        "endpoint:10.244.2.4:8080",
    }
    assert "web-2" in endpoints["endpoint:10.244.2.4:8080"]  # the pod, from the etcd capture
    edges = svg.find_all("g", "edge")
    svc = next(i for i in nodes if i.startswith("nat/KUBE-SVC-"))
    to_seps = [e for e in edges if e.attrs["data-from"] == svc]
    assert sorted(e.attrs["data-p"] for e in to_seps) == ["1", "1/2", "1/3"]
    assert [e.attrs["data-share"] for e in to_seps] == ["1/3", "1/3", "1/3"]
    assert sorted(e.find_all("text")[0].text for e in to_seps) == [
        "p 1 · 33.33%",
        "p 1/2 · 33.33%",
        "p 1/3 · 33.33%",
    ]
    for e in edges:  # every edge joins two drawn boxes
        assert e.attrs["data-from"] in nodes
        assert e.attrs["data-to"] in nodes
    tables = web.find_all("table", "outcomes")
    assert len(tables) == 2  # after, and before (the Service changed)
    after_rows = [
        (r.attrs["data-target"], r.attrs["data-share"]) for r in tables[0].find_all("tr", "outcome")
    ]
    assert after_rows == [("10.244.1.2:8080", "1/3"), ("10.244.1.3:8080", "1/3"), ("10.244.2.4:8080", "1/3")]
    before_rows = [r.attrs["data-share"] for r in tables[1].find_all("tr", "outcome")]
    assert before_rows == ["1/2", "1/2"]
    (old,) = [s for s in dom.find_all("section", "service") if s.attrs["data-service"] == "kube-system/old"]
    assert "traced before (removed after)" in old.text


def test_the_browser_shows_the_etcd_tree_with_values(page: Path, tmp_path: Path) -> None:
    dom = dump_dom(page, tmp_path / "profile")
    keys = {li.attrs["data-key"]: li for li in dom.find_all("li", "key")}
    dep = keys["/registry/deployments/default/web"]
    assert "modified" in dep.classes
    rows = {
        r.find_all("td", "path")[0].text: (r.find_all("td", "old")[0].text, r.find_all("td", "new")[0].text)
        for r in dep.find_all("tr", "field")
    }
    assert rows["spec.replicas"] == ("2", "3")
    assert "added" in keys["/registry/pods/default/web-2"].classes
    assert "/registry/pods/default/web-0" not in keys  # unchanged
    dirs = [d.find_all("span", "name")[0].text for d in dom.find_all("li", "dir")]
    assert dirs[:2] == ["configmaps", "default"]  # a tree of the key's segments


def test_html_in_user_data_is_text_and_never_runs(page: Path, tmp_path: Path) -> None:
    dom = dump_dom(page, tmp_path / "profile")
    assert dom.find_all("script") == []
    assert dom.find_all("img") == []
    (head,) = dom.find_all("head")
    (title,) = head.find_all("title")
    assert title.text == "k8sstate: before → after"  # the injected script would have set 'pwned'
    cm = next(
        li for li in dom.find_all("li", "key") if li.attrs["data-key"] == "/registry/configmaps/default/cfg"
    )
    news = [td.text for td in cm.find_all("td", "new")]
    assert f'"{HOSTILE}"' in news


def test_the_screenshot_is_a_drawn_page(page: Path, tmp_path: Path) -> None:
    png = screenshot(page, tmp_path / "shot.png", tmp_path / "profile", size=(1200, 900))
    width, height, ink, colours = ink_fraction(png)
    assert (width, height) == (1200, 900)
    assert ink > 0.03, f"only {ink:.1%} of the screenshot differs from the background"
    assert colours > 8
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    _w, _h, blank_ink, _c = ink_fraction(
        screenshot(blank, tmp_path / "blank.png", tmp_path / "profile", (1200, 900))
    )
    assert blank_ink == 0  # the check can fail: an empty page has no ink
