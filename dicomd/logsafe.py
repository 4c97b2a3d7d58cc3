"""Peer-supplied strings made safe for log lines and audit records.

AE titles, user names, file names and HTTP parameters come from whoever is on the other end. A
newline in one could forge a log line, a terminal escape could rewrite the screen of whoever reads
the log. `escape` renders every control character (C0, DEL, C1, and the Unicode line and
paragraph separators) and the backslash as a ``\\xNN`` / ``\\uNNNN`` escape, so one value is
always one line of visible text.

Libraries that log peer strings themselves (pynetdicom, pydicom) get an `EscapingFilter` on
their loggers (`escape_loggers`, called where dicomd configures pynetdicom).

Example::

    logger.warning("refused association from %s", escape(calling_ae))
"""

from __future__ import annotations

import logging
import re
import traceback

MAX_LENGTH = 256
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def _render(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object, limit: int = MAX_LENGTH) -> str:
    """``value`` as one line of printable text, at most ``limit`` characters plus an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_render, text)


class EscapingFilter(logging.Filter):
    """Renders a record's message (its text with the arguments put in), and the text of a logged
    exception, through `escape`: for libraries that log peer-supplied strings as they are
    (pynetdicom logs a refused AE title, and the exception saying why, with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business, not ours
            return True
        record.msg, record.args = escape(message, limit=4096), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = _traceback(record.exc_info[1])
        return True


def _traceback(exc: BaseException) -> str:
    """A traceback whose frames are as usual and whose exception text (peer data) is escaped."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{escape(f'{type(exc).__name__}: {exc}', limit=4096)}"


def escape_loggers(*prefixes: str) -> None:
    """Put an `EscapingFilter` on each logger named ``prefix`` or ``prefix.*`` that exists now
    (a filter is not inherited by child loggers, so each gets its own). Calling again is harmless."""
    names = [n for n in logging.root.manager.loggerDict if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in {*prefixes, *names}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapingFilter) for f in logger.filters):
            logger.addFilter(EscapingFilter())


class DemotingFilter(logging.Filter):
    """Turns a library's warnings into DEBUG lines: pydicom's warnings quote the values they are
    about ("Invalid value for VR UI: '1.2.3...'"), which are patient data. Errors stay errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def demote_loggers(*prefixes: str) -> None:
    """Put a `DemotingFilter` on each logger named ``prefix`` or ``prefix.*`` that exists now."""
    names = [n for n in logging.root.manager.loggerDict if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in {*prefixes, *names}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DemotingFilter) for f in logger.filters):
            logger.addFilter(DemotingFilter())
