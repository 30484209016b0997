"""JSON-RPC 2.0 over HTTP on Unix sockets, wire-compatible with InfraKit's plugins."""
