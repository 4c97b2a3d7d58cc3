"""Peer-supplied strings made safe for log lines and audit records.

AE titles, user names, file names and HTTP parameters come from whoever is on the other end. A
newline in one could forge a log line, a terminal escape could rewrite the screen of whoever reads
the log. `escape` renders every control character (C0, DEL, C1, and the Unicode line and
paragraph separators) and the backslash as a ``\\xNN`` / ``\\uNNNN`` escape, so one value is
always one line of visible text.

Example::

    logger.warning("refused association from %s", escape(calling_ae))
"""

from __future__ import annotations

import re

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
