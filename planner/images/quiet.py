"""Keep library chatter out of the one-line error a failed load ends with.

pydicom, nibabel and pynrrd warn (Python warnings) or log (nibabel has its own stderr handler)
about odd values while a file is read. When the read then fails, our :class:`InputError` names
the file and the problem; the library's lines printed before it would only bury that line. So
the loaders hold these messages back while they read: dropped when the load fails, shown as
usual once it succeeds.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

#: Loggers of the readers (nibabel attaches a stderr handler of its own).
_LOGGERS = ("nibabel", "nibabel.global", "pydicom", "nrrd")

_lock = threading.Lock()
_depth = 0
_held_warnings: list[tuple[Any, ...]] = []
_held_records: list[logging.LogRecord] = []
_saved: dict[str, Any] = {}


class _Hold(logging.Handler):
    """Holds the records of the readers' child loggers (they reach the parents' handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        _held_records.append(record)


def _hold_record(record: logging.LogRecord) -> bool:
    """A logger filter: holds a record logged on the logger itself, before any handler sees it
    (also handlers a library adds when it is first imported during the hold)."""
    _held_records.append(record)
    return False


def _hold_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    _held_warnings.append((message, category, filename, lineno, file, line))


def _start() -> None:
    _saved["showwarning"] = warnings.showwarning
    warnings.showwarning = _hold_warning  # the warning filters stay as they are
    hold = _Hold()
    _saved["loggers"] = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        _saved["loggers"].append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [hold]
        logger.propagate = False
        logger.addFilter(_hold_record)


def _stop() -> tuple[list[tuple[Any, ...]], list[logging.LogRecord]]:
    warnings.showwarning = _saved.pop("showwarning")
    for logger, handlers, propagate in _saved.pop("loggers"):
        # A library imported during the hold added its handlers to ours: keep them.
        added = [h for h in logger.handlers if not isinstance(h, _Hold) and h not in handlers]
        logger.handlers = handlers + added
        logger.propagate = propagate
        logger.removeFilter(_hold_record)
    held = (_held_warnings[:], _held_records[:])
    _held_warnings.clear()
    _held_records.clear()
    return held


@contextmanager
def held_library_warnings() -> Iterator[None]:
    """Hold back the readers' warnings and log lines while the block runs; drop them if it raises.

    Nested and concurrent uses share one hold, released when the last one ends (so a failed
    load may also drop the warnings of a load that ran beside it, never show them twice).
    """
    global _depth
    with _lock:
        if _depth == 0:
            _start()
        _depth += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        with _lock:
            _depth -= 1
            held = _stop() if _depth == 0 else ([], [])
        if ok:
            for args in held[0]:
                warnings.showwarning(*args)
            for record in held[1]:
                logging.getLogger(record.name).handle(record)


def one_line(text: object) -> str:
    """A library's (possibly multi-line) message as one line.

    Lines are joined with "; " (with a space after a line ending in ":"), so that pydicom's
    "Unable to decode ... plugins:" followed by one line per decoder keeps every decoder's failure.
    """
    parts = [" ".join(p.split()) for p in str(text).splitlines()]
    out = ""
    for p in (p for p in parts if p):
        out = p if not out else out + (" " if out.endswith(":") else "; ") + p
    return out
