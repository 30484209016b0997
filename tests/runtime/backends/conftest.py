"""The real etcd cluster fixtures (``tests/runtime/etcd_cluster.py``) for the backend tests."""

from tests.runtime.etcd_cluster import EtcdCluster, etcd, etcd_cluster, free_ports

__all__ = ["EtcdCluster", "etcd", "etcd_cluster", "free_ports"]
