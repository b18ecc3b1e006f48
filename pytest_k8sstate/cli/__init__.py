"""The ``k8sstate`` command line: one entry point, one module per command group."""

from __future__ import annotations

from pytest_k8sstate.cli.main import main

__all__ = ["main"]
