"""Cluster providers: create, find, reset and delete Kubernetes clusters for the tests.

``base`` is the contract (:class:`~pytest_k8sstate.providers.base.Cluster`, ``Provider``), ``registry``
loads providers by name, ``host`` holds checks of this machine (kernel features, processes) that more than
one provider needs, and each provider is its own module or package: ``local/``, ``kind/``, ``minikube``,
``existing``. Nothing is imported here, so importing one provider never imports the others.
"""
