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
from keys.i18n import _, language
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
    e = html.escape
    title, heading, empty = e(_("intake: decrypted submissions")), e(_("Decrypted submissions")), e(_("No sources yet."))
    page = f"""<!doctype html>
<html lang="{e(language())}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}pre{{white-space:pre-wrap;background:#f4f4f4;padding:.5em}}</style>
</head><body>
<h1>{heading}</h1>
{"".join(sections) or f"<p>{empty}</p>"}
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
            note = e(_(" (sent as “{name}”)")).format(name=e(str(original))) if original and original != name else ""
            size = e(_("{size:,} bytes").format(size=path.stat().st_size))
            rows.append(f"<li>{label}{note}, {size}</li>")
    nothing = e(_("nothing decrypted for you"))
    return (
        f"<section><h2>{e(record['designation'])}</h2>"
        "<p>" + e(_("source id {id}; reply with {command}")).format(
            id=f"<code>{e(record['source_id'])}</code>", command=f"<code>{e(reply_command(folder))} …</code>") + "</p>"
        f"<ul>{''.join(rows) or f'<li>{nothing}</li>'}</ul></section>\n"
    )


def reply_command(folder: Path) -> str:
    """The start of the shell command that replies to the source in ``folder``, safe to paste."""
    return f"intake-keys reply --source {shlex.quote(str(folder))}"
