"""What index.html of a decrypted export folder is made of (keys.cleaning.triage writes it).

Everything shown comes from hostile input (designations, file names, message
text), so every link is a quoted relative path and every suggested shell command
quotes its arguments (shlex.quote, then HTML-escaped by the page).
"""

from __future__ import annotations

import shlex
from pathlib import Path

INDEX = "index.html"
INLINE_LIMIT = 256 << 10  # longer messages are linked, not shown inline
_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def _percent_encode(relative_path: str) -> str:
    """A relative link to a file (RFC 3986 percent-encoding; keys/ keeps clear of urllib)."""
    return "".join(chr(b) if b in _URL_SAFE else f"%{b:02X}" for b in relative_path.encode("utf-8"))


def reply_command(folder: Path) -> str:
    """The start of the shell command that replies to the source in ``folder``, safe to paste."""
    return f"intake-keys reply --source {shlex.quote(str(folder))}"
