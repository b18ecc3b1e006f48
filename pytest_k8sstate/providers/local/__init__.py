"""The ``local`` provider: a real control plane and real kube-proxies in network namespaces, no containers.

``provider`` (:class:`~pytest_k8sstate.providers.local.provider.LocalProvider`: create, get, reset, delete),
``components`` (command lines), ``binaries`` (which programs), ``procs`` (starting and watching them),
``rest`` (the few API calls create makes), ``readiness`` (when it is ready), ``addons`` (Node objects and
kubeadm's add-ons), ``net`` (namespaces and the bridge), ``state`` (``state.json`` bookkeeping),
``reset`` (``fresh=True``: back to the pristine capture) and ``reaper`` (leftovers of dead sessions).
Nothing is imported here: ``import pytest_k8sstate.providers.local.state`` stays cheap.
"""
