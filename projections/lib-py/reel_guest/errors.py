"""Errors a projection reports; raising one fails the batch (or the query)."""

from wit_world.imports import types as _types

__all__ = ["Error", "Failed", "InvalidEvent"]


class Error(Exception):
    """Base of the errors a projection reports."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def to_wit(self):
        return _types.Error_Failed(self.message)


class InvalidEvent(Error):
    """The event's payload is not what the projection expects."""

    def to_wit(self):
        return _types.Error_InvalidEvent(self.message)


class Failed(Error):
    """Anything else that went wrong."""
