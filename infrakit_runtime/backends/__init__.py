"""Leader election and spec store backends: ``file`` (one host) and ``etcd`` (many)."""
