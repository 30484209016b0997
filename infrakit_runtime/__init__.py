"""infrakit_runtime: a Python re-implementation of Docker InfraKit's runtime.

The controller, the plugin daemons and the ``infrakit`` command, wire-compatible
with InfraKit's JSON-RPC plugins so Go and Python plugins interoperate.
"""

__version__ = "0.1.0"
