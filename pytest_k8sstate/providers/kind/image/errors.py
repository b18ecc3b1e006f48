"""The one error of the node image build."""

from __future__ import annotations

from pytest_k8sstate.errors import K8sStateError

__all__ = ["ImageBuildError"]


class ImageBuildError(K8sStateError):
    """A step of the node image build failed (message names the step, the command and the log)."""
