"""Clean every decrypted file of a folder: a cleaned copy beside each original, and a record.

For each file ``decrypt`` recorded in a source's source.json: the danger checks
first (some refuse cleaning: archives that would escape or explode, programs,
files that are not what their name says), then mat2 in the sandbox, in a
scratch folder of its own inside the source folder (same disk, so the copy is
renamed, never copied; removed afterwards). The cleaned copy is named like
mat2 names it, ``NAME.cleaned.EXT``, and never replaces anything. What happened
to each file goes into ``cleaning.json`` in the source folder, for the triage
view. A file the cleaner cannot handle, or that makes it hang or crash, is
reported and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from keys.cleaning import danger, metadata, sandbox, wording
from keys.cleaning.sandbox import Limits
from keys.errors import FormatError, KeysError
from keys.files import TEMP_PREFIX, PendingFile, link_new, with_suffix_number
from keys.source_record import SOURCE_RECORD, load_source_record

RECORD = "cleaning.json"
MAX_RECORD = 64 << 20
SHOWN_FIELDS = 8  # field names listed per file in the report; the rest are counted


@dataclasses.dataclass
class CleanSummary:
    cleaned: int = 0
    not_cleaned: int = 0
    already: int = 0
    flagged: int = 0


def source_folders(folder: Path) -> list[Path]:
    """``folder`` itself if decrypt made it for one source, else the source folders in it (never a symlink)."""
    if (folder / SOURCE_RECORD).is_file():
        return [folder]
    if not folder.is_dir():
        raise KeysError(wording.text("not-a-folder").format(folder=folder))
    found = sorted(p for p in folder.iterdir() if not p.is_symlink() and p.is_dir() and (p / SOURCE_RECORD).is_file())
    if not found:
        raise FormatError(wording.text("no-source-folder").format(folder=folder, record=SOURCE_RECORD))
    return found


def decrypted_files(folder: Path, record: dict) -> Iterator[Path]:
    """The files decrypt wrote into a source folder: its record's file items that are still plain files there."""
    for entry in record["items"]:
        name = entry.get("file")
        if entry.get("kind") == "message" or not isinstance(name, str) or not name:
            continue
        path = folder / name
        if path.parent == folder and not path.is_symlink() and path.is_file():
            yield path


def load_record(folder: Path) -> dict:
    """cleaning.json of a source folder: {file name: what cleaning did}; empty if missing or damaged."""
    try:
        with open(folder / RECORD, "rb") as f:
            record = json.loads(f.read(MAX_RECORD))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and all(isinstance(v, dict) for v in record.values()) else {}


def _save_record(folder: Path, record: dict) -> None:
    with PendingFile(folder) as pending:
        pending.write(json.dumps(record, indent=2, ensure_ascii=False).encode())
        pending.commit_replacing(RECORD, durable=False)


def clean_folder(folder: Path, say: Callable[[str], None] = print, limits: Limits = Limits()) -> CleanSummary:
    tools = sandbox.find_tools()
    sources = source_folders(folder)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=sources[0]) as scratch:
        sandbox.check_sandbox(tools, Path(scratch))
    summary = CleanSummary()
    for source in sources:
        record = load_source_record(source)
        assert record is not None
        cleaning = load_record(source)
        for path in decrypted_files(source, record):
            done = cleaning.get(path.name, {})
            if done.get("status") == "cleaned" and (source / str(done.get("cleaned"))).is_file():
                summary.already += 1
                continue
            inspection = danger.inspect(path)
            entry = _clean_file(tools, path, inspection, limits)
            cleaning[path.name] = entry
            _save_record(source, cleaning)
            summary.cleaned += entry["status"] == "cleaned"
            summary.not_cleaned += entry["status"] != "cleaned"
            summary.flagged += bool(inspection.flags)
            others = tuple(flag for flag in inspection.flags if flag != inspection.blocking)  # the blocking one is the status
            say(f"{source.name}/{path.name}: {describe(entry)}{_warnings(others)}")
    return summary


def _clean_file(tools: sandbox.Tools, path: Path, inspection: danger.Inspection, limits: Limits) -> dict:
    blocking = inspection.blocking
    if blocking:
        return {"status": "refused", "flag": blocking.code, "detail": blocking.detail}
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=path.parent) as scratch:
        result = metadata.clean(tools, path, Path(scratch), limits.for_file(path.stat().st_size))
        cleaned = _keep(result.cleaned, path) if result.cleaned else None
    return {
        "status": result.status,
        "detail": result.detail,
        "cleaned": cleaned.name if cleaned else None,
        "removed": list(result.removed),
        "left": list(result.left),
    }


def cleaned_name(original: str) -> str:
    stem, dot, ext = original.rpartition(".")
    return f"{stem}.cleaned.{ext}" if dot and stem else f"{original}.cleaned"


def _keep(cleaned: Path, original: Path) -> Path:
    """Give the scratch copy its place beside the original: the first free name, nothing replaced."""
    cleaned.chmod(0o600)
    for number in range(1, 10_000):
        target = original.parent / with_suffix_number(cleaned_name(original.name), number)
        try:
            link_new(cleaned, target)
        except FileExistsError:
            continue
        return target
    raise FileExistsError(wording.text("no-free-name").format(name=original.name))


def describe(entry: dict) -> str:
    """One line for what cleaning did to a file, from its cleaning.json entry."""
    status = str(entry.get("status"))
    if status == "refused":
        code = str(entry.get("flag"))
        reason = flag_text(danger.Flag(code, str(entry.get("detail", ""))))
        return wording.status("refused").format(reason=reason)
    if status != "cleaned":
        template = wording.status(status if status in wording.STATUS else "failed")
        return template.format(detail=str(entry.get("detail", "")), seconds=str(entry.get("detail", "")))
    removed = [str(name) for name in entry.get("removed", [])]
    left = [str(name) for name in entry.get("left", [])]
    parts = [wording.status("cleaned")]
    parts.append(wording.text("removed").format(fields=field_list(removed)) if removed else wording.text("nothing-found"))
    if left:
        parts.append(wording.text("left").format(fields=field_list(left)))
    return "; ".join(parts)


def field_list(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_FIELDS])
    if len(names) <= SHOWN_FIELDS:
        return shown
    return wording.text("more-fields").format(fields=shown, count=len(names) - SHOWN_FIELDS)


def flag_text(flag: danger.Flag) -> str:
    if flag.code == "executable" and flag.detail in wording.KINDS:  # a program found by its content: name its kind
        return wording.flag("executable-kind").format(detail=wording.kind(flag.detail))
    return wording.flag(flag.code).format(detail=sandbox.printable(flag.detail)[:100])


def _warnings(flags: tuple[danger.Flag, ...]) -> str:
    return "".join("\n  " + wording.text("warning").format(text=flag_text(flag)) for flag in flags)
