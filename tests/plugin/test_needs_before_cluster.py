"""``needs`` is checked before session fixtures: an unsatisfiable cluster is never created just to skip."""

from __future__ import annotations

from typing import Any


def test_ipvs_marker_with_needs_skips_without_creating_a_cluster(plugin: Any) -> None:
    plugin.pytester.makepyfile(
        test_ipvs="""
        import pytest

        @pytest.mark.k8sstate(proxy_mode="ipvs")
        @pytest.mark.needs("ipvs")
        def test_ipvs(k8s_cluster):
            raise AssertionError("must not run")
        """
    )
    result = plugin.run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs ipvs:*"])
