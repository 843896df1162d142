"""index.html for a decrypted export folder: every source and item, no scripts.

Everything shown comes from hostile input (designations, file names, message
text), so every value is HTML-escaped, every link is a quoted relative path,
every suggested shell command quotes its arguments (shlex.quote, then HTML-
escaped), and a Content-Security-Policy forbids scripts and remote loads outright.
"""

from __future__ import annotations

import html
import shlex
from pathlib import Path

from keys.errors import FormatError
from keys.files import PendingFile
from keys.source_record import SOURCE_RECORD, load_source_record

INDEX = "index.html"
INLINE_LIMIT = 256 << 10  # longer messages are linked, not shown inline
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def _percent_encode(relative_path: str) -> str:
    """A relative link to a file (RFC 3986 percent-encoding; keys/ keeps clear of urllib)."""
    return "".join(chr(b) if b in _URL_SAFE else f"%{b:02X}" for b in relative_path.encode("utf-8"))


def write_index(out: Path) -> Path:
    sections = []
    # Source folders are real directories that unpack made: never a symlink found in ``out``.
    for folder in sorted(p for p in out.iterdir() if not p.is_symlink() and p.is_dir() and (p / SOURCE_RECORD).is_file()):
        try:
            record = load_source_record(folder)
        except FormatError:
            continue
        assert record is not None
        sections.append(_source_section(folder, record))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>intake: decrypted submissions</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}pre{{white-space:pre-wrap;background:#f4f4f4;padding:.5em}}</style>
</head><body>
<h1>Decrypted submissions</h1>
{"".join(sections) or "<p>No sources yet.</p>"}
</body></html>
"""
    with PendingFile(out, 0o600) as pending:
        pending.write(page.encode("utf-8"))
        return pending.commit_replacing(INDEX, durable=False)


def _source_section(folder: Path, record: dict) -> str:
    e = html.escape
    rows = []
    for entry in sorted(record["items"], key=lambda item: (str(item.get("received_day")), str(item.get("file")))):
        name = str(entry.get("file", ""))
        path = folder / name
        if not name or path.parent != folder or not path.is_file():
            continue
        href = _percent_encode(f"{folder.name}/{name}")
        label = f'{e(str(entry.get("received_day")))} · {e(str(entry.get("kind")))} · <a href="{href}">{e(name)}</a>'
        if entry.get("kind") == "message" and path.stat().st_size <= INLINE_LIMIT:
            text = path.read_bytes().decode("utf-8", "replace")
            rows.append(f"<li>{label}<pre>{e(text)}</pre></li>")
        else:
            original = entry.get("original_name")
            note = f" (sent as “{e(str(original))}”)" if original and original != name else ""
            rows.append(f"<li>{label}{note}, {path.stat().st_size:,} bytes</li>")
    return (
        f"<section><h2>{e(record['designation'])}</h2>"
        f"<p>source id <code>{e(record['source_id'])}</code>; reply with "
        f"<code>{e(reply_command(folder))} …</code></p>"
        f"<ul>{''.join(rows) or '<li>nothing decrypted for you</li>'}</ul></section>\n"
    )


def reply_command(folder: Path) -> str:
    """The start of the shell command that replies to the source in ``folder``, safe to paste."""
    return f"intake-keys reply --source {shlex.quote(str(folder))}"
