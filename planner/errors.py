"""The project's exceptions.

Library code raises these; only the command line turns them into messages and exit codes
(``InputError`` -> exit status 2). Each message names the file or value, what is wrong
and, where it helps, what is allowed or what to do.
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(PlannerError, ValueError):
    """The input (a file, a folder, an argument) cannot be used as given."""


class GeometryError(InputError):
    """An image's geometry is invalid or cannot be made regular safely."""


class MissingDependencyError(PlannerError, ImportError):
    """An optional back end is needed but not installed; the message says what to install."""


def brief(detail: object, limit: int = 160) -> str:
    """``detail`` (an exception, a value from a file) fit for a one-line message: control
    characters and line breaks as escapes or spaces, runs of blanks as one, cut to ``limit``
    characters with "..." where something was left out."""
    if isinstance(detail, BaseException):
        text = str(detail) or type(detail).__name__
    else:
        text = str(detail)
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
