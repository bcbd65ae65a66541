"""The one root of every error distopt raises on purpose.

A user's objective that fails is *not* an error of this kind: the trial is recorded as FAILED and
the study goes on. These classes are for misuse of the API or of a study file, and their messages
name the field, what was received and the fix.
"""

from __future__ import annotations


class DistoptError(Exception):
    """Root of all errors distopt raises for bad input or misuse."""


class ConfigError(DistoptError, ValueError):
    """A study, space or argument is malformed; the message names the field and the fix."""


class StoreError(DistoptError):
    """A store cannot be opened, written or locked; stored data is never modified by the raiser."""


def field_error(field: str, problem: str, fix: str | None = None) -> ConfigError:
    """Build a ConfigError whose single line reads ``field: problem (fix)``."""
    message = f"{field}: {problem}"
    if fix:
        message += f"; {fix}"
    return ConfigError(message)
