"""The ``kind`` provider: ``provider`` (KindProvider), ``config`` (kind's Cluster config and argv), ``ready``
(nodes, leases, CoreDNS), ``reaper`` (clusters of dead sessions), ``image`` (the offline node image) and
``noderoutes`` (the node image's default CNI without kindnetd; its agent and manifest are in ``data/``)."""
