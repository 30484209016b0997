"""Flavors for a self-hosted control plane: etcd members and controller replicas kept alive as pet groups.

``etcd`` (``etcd.EtcdFlavor``) joins each member to the running cluster as a learner before it
starts and promotes it once it has caught up; ``manager`` (``manager.ManagerFlavor``) renders a
controller replica's configuration. Both derive their addresses from the member's logical ID
(``addresses``). One daemon (``daemon``, kind ``selfhost``) serves both, as ``selfhost/etcd`` and
``selfhost/manager``.
"""
