"""Errors a user can act on.

Anything raised as a :class:`UserError` reaches the terminal as one paragraph and exit code 2, never as a
traceback: it means "your input is wrong, here is how to fix it", not "rsitr-bench is broken".
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (names, files, configuration) that the user can fix."""

    exit_code = 2


class ConfigError(UserError):
    """The run configuration is unreadable, has unknown keys or values of the wrong type."""


class UnknownPluginError(UserError):
    """A method, dataset, keyword provider or perspective generator name that no plugin registers."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        listing = ", ".join(sorted(known)) or "(none registered)"
        super().__init__(
            f"Unknown {kind} {name!r}. Known {kind}s: {listing}. "
            f"Run `rsitr-bench list` to see every registered plugin and the package that provides it."
        )


class CheckpointError(UserError):
    """A checkpoint is missing, unsafe to load, or does not match the model's parameters."""


class DataError(UserError):
    """A dataset file is missing or malformed. The message names the file and the record."""


class NetworkError(UserError):
    """A download could not reach its server; the message says what to fetch elsewhere and where to put it."""
