"""JSON-RPC error codes and the exception that carries one across the dispatcher."""

from __future__ import annotations

from infrakit_runtime.spi.common import JSON, PluginError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# InfraKit answers every application failure with -32000 and the error text.
APPLICATION_ERROR = -32000


class RpcError(Exception):
    """An error answer: a JSON-RPC code, a readable message and optional data."""

    def __init__(self, code: int, message: str, data: JSON = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "data": self.data}


class RemoteError(Exception):
    """A plugin answered a call with a JSON-RPC error (raised by clients)."""

    def __init__(self, plugin: str, method: str, code: int, message: str, data: JSON = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class UnreachableError(PluginError):
    """A plugin could not be reached (no socket, connection refused, timeout).

    A ``PluginError`` like any failure of the plugin: the controller backs off the same way
    whether a plugin answered "no" or did not answer at all.
    """
