"""index.html as a triage view of a decrypted folder: what came in, what is safe to open.

Per source, per day: the messages inline as escaped text, and a table of the
files with their size, their type as the bytes say, what cleaning did and the
danger flags. The cleaned copy is linked first; a dangerous file is never a
link (a mere caution, such as a misleading name, still is), so no click opens
it by accident. The page has no scripts and loads nothing (a
Content-Security-Policy in a meta tag forbids all but its own style, pinned by
hash), and reads the same with JavaScript off. Everything shown comes
from hostile input and is escaped; suggested commands are shell-quoted first.
"""

from __future__ import annotations

import base64
import hashlib
import html
import shlex
from collections import defaultdict
from pathlib import Path

from keys.cleaning import danger, folder as cleaning, wording
from keys.i18n import language
from keys.errors import FormatError
from keys.files import PendingFile
from keys.index import INDEX, INLINE_LIMIT, _percent_encode, reply_command
from keys.source_record import SOURCE_RECORD, load_source_record

_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#111;background:#fff}"
    "pre{white-space:pre-wrap;background:#f4f4f4;padding:.5em;border-left:4px solid #555}"
    "table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:.3em .5em;text-align:left;vertical-align:top}"
    ".danger{background:#fff0f0}.warn{color:#8b0000;font-weight:bold}.advice{border:2px solid #8b0000;padding:.5em}"
    "a{color:#0645ad}code{overflow-wrap:anywhere}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; form-action 'none'; base-uri 'none'"


def write_triage(out: Path) -> Path:
    """Write ``out``/index.html for every source folder decrypt made in ``out``."""
    t = wording.text
    e = html.escape
    sections = []
    uncleaned = False
    for number, source in enumerate(sorted(p for p in out.iterdir() if not p.is_symlink() and p.is_dir() and (p / SOURCE_RECORD).is_file())):
        try:
            record = load_source_record(source)
        except FormatError:
            continue
        assert record is not None
        section, source_uncleaned = _source_section(source, record, number)
        sections.append(section)
        uncleaned |= source_uncleaned
    note = ""
    if uncleaned:
        command = f"intake-keys clean {shlex.quote(str(out))}"
        note = f"<p>{e(t('not-cleaned-yet')).replace('{command}', f'<code>{e(command)}</code>')}</p>"
    page = (
        f'<!doctype html>\n<html lang="{e(language())}"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{e(t("title"))}</title>\n'
        f"<style>{_STYLE}</style>\n</head><body><main>\n"
        f'<h1>{e(t("heading"))}</h1>\n<p class="advice">{e(t("advice"))}</p>\n{note}\n'
        f'{"".join(sections) or "<p>" + e(t("no-sources")) + "</p>"}\n</main></body></html>\n'
    )
    with PendingFile(out, 0o600) as pending:
        pending.write(page.encode("utf-8"))
        return pending.commit_replacing(INDEX, durable=False)


def _source_section(source: Path, record: dict, number: int) -> tuple[str, bool]:
    t = wording.text
    e = html.escape
    cleaning_record = cleaning.load_record(source)
    days: dict[str, list[dict]] = defaultdict(list)
    for entry in record["items"]:
        days[str(entry.get("received_day"))].append(entry)
    uncleaned = False
    parts = []
    for day in sorted(days, reverse=True):
        messages, rows = [], []
        for entry in sorted(days[day], key=lambda item: str(item.get("file"))):
            name = str(entry.get("file", ""))
            path = source / name
            if not name or path.parent != source or path.is_symlink() or not path.is_file():
                continue
            if entry.get("kind") == "message":
                messages.append(_message(source, path))
            else:
                row, row_uncleaned = _file_row(source, path, entry, cleaning_record.get(name))
                rows.append(row)
                uncleaned |= row_uncleaned
        if not messages and not rows:
            continue
        heading = f'<h3>{e(t("day").format(day=day))}</h3>'
        body = "".join(messages)
        if rows:
            body += (
                f'<table><caption>{e(t("files"))}</caption><thead><tr>'
                + "".join(f'<th scope="col">{e(t(key))}</th>' for key in ("column-file", "column-size", "column-type", "column-cleaning", "column-warnings"))
                + f'</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            )
        parts.append(f"<section>{heading}{body}</section>")
    section = (
        f'<section aria-labelledby="source-{number}"><h2 id="source-{number}">{e(record["designation"])}</h2>'
        f'<p>{e(t("source-id"))}: <code>{e(record["source_id"])}</code>; {e(t("reply-with"))}: '
        f"<code>{e(reply_command(source))} …</code></p>"
        f'{"".join(parts) or "<p>" + e(t("nothing-for-you")) + "</p>"}</section>\n'
    )
    return section, uncleaned


def _message(source: Path, path: Path) -> str:
    e = html.escape
    if path.stat().st_size > INLINE_LIMIT:
        link = f'<a href="{_percent_encode(f"{source.name}/{path.name}")}">{e(path.name)}</a>'
        return f"<p>{e(wording.text('message-too-long')).replace('{name}', link)}</p>"
    return f"<pre>{e(path.read_bytes().decode('utf-8', 'replace'))}</pre>"


def _file_row(source: Path, path: Path, entry: dict, done: dict | None) -> tuple[str, bool]:
    t = wording.text
    e = html.escape
    inspection = danger.inspect(path)
    links = []
    cleaned_name = str(done.get("cleaned")) if done and done.get("status") == "cleaned" and done.get("cleaned") else None
    cleaned = source / cleaned_name if cleaned_name else None
    cleaned_flags: tuple[danger.Flag, ...] = ()
    if cleaned is not None and cleaned.parent == source and cleaned.is_file() and not cleaned.is_symlink():
        cleaned_flags = danger.inspect(cleaned).flags
        links.append(_link_or_name(source, cleaned, t("open-cleaned"), safe=not danger.any_dangerous(cleaned_flags)))
    links.append(_link_or_name(source, path, t("open-original"), safe=not danger.any_dangerous(inspection.flags)))
    original = entry.get("original_name")
    sent_as = f'<br>{e(t("sent-as").format(name=original))}' if original and not path.name.endswith(f" {original}") else ""
    flags = list(inspection.flags) + [flag for flag in cleaned_flags if flag not in inspection.flags]
    warnings = (
        "<ul>" + "".join(f'<li class="warn">{e(cleaning.flag_text(flag))}</li>' for flag in flags) + "</ul>"
        if flags
        else e(t("no-warnings"))
    )
    status = cleaning.describe(done) if done else wording.status("not-cleaned")
    row_class = ' class="danger"' if flags else ""
    row = (
        f'<tr{row_class}><th scope="row">{"<br>".join(links)}{sent_as}</th>'
        f'<td>{e(wording.byte_count(path.stat().st_size))}</td>'
        f'<td>{e(wording.kind(inspection.kind.name))}</td>'
        f"<td>{e(status)}</td><td>{warnings}</td></tr>"
    )
    return row, done is None


def _link_or_name(source: Path, path: Path, label: str, safe: bool) -> str:
    """A link to a file; only the bare name of a dangerous one, so no click opens it."""
    e = html.escape
    if safe:
        return f'<a href="{_percent_encode(f"{source.name}/{path.name}")}">{e(path.name)}</a> ({e(label)})'
    return f"{e(path.name)} ({e(label)})"
