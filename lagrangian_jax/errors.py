"""The library's error types, in one place.

Every expected failure is one of these, with a one-line message that names what is
wrong (a config key such as ``config.distprop.margin``, a path, a shape). The launcher
prints ``error: <message>`` and exits 1 for any :class:`Error`; anything else is a bug.
"""

from __future__ import annotations


class Error(Exception):
  """Base class of the library's expected failures."""


class ConfigError(Error, ValueError):
  """A bad configuration value; the message starts with the key, ``config.a.b: ...``."""


class DataError(Error, ValueError):
  """Data that cannot be found or read; the message names the path or data set."""


class TrainingError(Error, RuntimeError):
  """Training failed (diverged, unusable checkpoint); the last good checkpoint is kept."""


def require(condition: bool, key: str, message: str) -> None:
  """Raises ``ConfigError("config.<key>: <message>")`` unless ``condition`` holds."""
  if not condition:
    raise ConfigError(f"config.{key}: {message}")
