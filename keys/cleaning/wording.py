"""Every sentence the cleaning report and the triage view show, in one place, for translators.

Plain strings; ``{name}`` fields are filled with ``str.format`` and always
escaped before they reach HTML. Keys are stable: code refers to them, not to
the English text. Each string is marked with ``N_`` for pybabel (catalogue
``intake-keys``) and translated when it is shown, through the accessors at the
end (``text``, ``status``, ``flag``, ``kind``...), never at import: the
language is chosen after the modules are loaded.
"""

from __future__ import annotations

from keys.i18n import _, ngettext


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


TEXT = {
    "title": N_("intake: decrypted submissions"),
    "heading": N_("Decrypted submissions"),
    "advice": N_(
        "Open the cleaned copy of a file, not the original, and only on this offline laptop. "
        "A file with a warning may attack the program that opens it: do not open it here "
        "unless you know what the warning means."
    ),
    "not-cleaned-yet": N_("Files are not cleaned yet: run {command} to make cleaned copies."),
    "no-sources": N_("No sources yet."),
    "source-id": N_("Source id"),
    "reply-with": N_("Reply with"),
    "day": N_("Received {day}"),
    "files": N_("Files"),
    "column-file": N_("File"),
    "column-size": N_("Size"),
    "column-type": N_("Type"),
    "column-cleaning": N_("Cleaning"),
    "column-warnings": N_("Warnings"),
    "open-cleaned": N_("cleaned copy"),
    "open-original": N_("original, metadata intact"),
    "sent-as": N_("sent as “{name}”"),
    "no-warnings": N_("none found"),
    "nothing-for-you": N_("Nothing was decrypted for you."),
    "message-too-long": N_("This message is long: open {name}."),
    "removed": N_("removed: {fields}"),
    "nothing-found": N_("no metadata found"),
    "left": N_("still listed after cleaning (mostly neutral values): {fields}"),
    "more-fields": N_("{fields} and {count} more"),
    "warning": N_("warning: {text}"),
    # The terminal lines of `intake-keys clean` (and of `decrypt --clean`).
    "clean-summary": N_("{cleaned} file(s) cleaned, {not_cleaned} not cleaned, {already} cleaned before; {flagged} file(s) with warnings"),
    "clean-done": N_("cleaned copies are beside the originals; open {index}"),
    # Why `clean` cannot start or go on (one line on stderr).
    "not-a-folder": N_("{folder} is not a folder"),
    "no-source-folder": N_("{folder} holds no source folder from intake-keys decrypt (no {record})"),
    "no-free-name": N_("no free name for the cleaned copy of {name}"),
    "mat2-missing": N_("mat2 is not installed, and cleaning needs it: install with `{install}`"),
    "bubblewrap-missing": N_("bubblewrap is not installed, and cleaning needs it: install with `{install}`"),
    "both-missing": N_("mat2 and bubblewrap are not installed, and cleaning needs them: install with `{install}`"),
    "mat2-outside-usr": N_("the sandbox sees only /usr, and mat2 is {mat2}: install Debian's with `{install}`"),
    "no-sandbox": N_("bubblewrap cannot make a sandbox here ({reason}); cleaning needs it"),
}

# What a cleaning attempt came to: short, for a table cell and a terminal line.
STATUS = {
    "cleaned": N_("cleaned"),
    "not-cleaned": N_("not cleaned yet"),
    "refused": N_("not cleaned: {reason}"),
    "unsupported": N_("not cleaned: mat2 does not support this format"),
    "failed": N_("not cleaned: mat2 failed ({detail})"),
    "copy-failed": N_("not cleaned: ffmpeg could not copy the picture and sound into an MP4 ({detail})"),
    "timeout": N_("not cleaned: the cleaner took longer than {seconds} seconds and was stopped"),
    "crashed": N_("not cleaned: the cleaner crashed or went over its time or memory limit"),
}

# Why a file was not cleaned or must be handled with care. {detail} comes from the file.
FLAGS = {
    "executable": N_("a program or script (.{detail}): never run it"),
    "executable-kind": N_("{detail}: never run it"),
    "mismatch": N_("its content is not what its name (.{detail}) says"),
    "macros": N_("an office document with macros"),
    "embedded": N_("an office document with embedded objects or ActiveX controls"),
    "remote": N_("loads something from the internet when opened ({detail})"),
    "script": N_("contains scripts"),
    "pdf-active": N_("a PDF with active content ({detail})"),
    "encrypted": N_("encrypted ({detail}): its metadata cannot be removed"),
    "partly-checked": N_("large: only the first {detail} were checked"),
    "media-track": N_(
        "a video with tracks that are neither picture nor sound ({detail}): cameras and drones record "
        "places and times there; cleaning leaves them out of the copy"
    ),
    "archive-traversal": N_("an archive with names that leave its folder ({detail}); refused"),
    "archive-link": N_("an archive with links or device files ({detail}); refused"),
    "archive-encrypted": N_("an archive with encrypted members ({detail}); refused"),
    "archive-overlap": N_("an archive whose entries overlap (a zip bomb); refused"),
    "archive-bomb": N_("an archive that would expand to {detail} bytes; refused"),
    "archive-nesting": N_("archives nested more than {detail} deep; refused"),
    "archive-members": N_("an archive with {detail} members; refused"),
    "archive-unreadable": N_("a damaged archive; refused"),
    "archive-uninspected": N_("a compressed archive ({detail}) that is not checked; refused"),
}

# Types as detected from the content (sniff.Kind.name).
KINDS = {
    "jpeg": N_("JPEG image"),
    "png": N_("PNG image"),
    "gif": N_("GIF image"),
    "tiff": N_("TIFF image"),
    "heic": N_("HEIC image"),
    "webp": N_("WebP image"),
    "pdf": N_("PDF document"),
    "ole": N_("old Microsoft Office file"),
    "docx": N_("Word document"),
    "docm": N_("Word document with macros"),
    "xlsx": N_("Excel spreadsheet"),
    "xlsm": N_("Excel spreadsheet with macros"),
    "pptx": N_("PowerPoint presentation"),
    "pptm": N_("PowerPoint presentation with macros"),
    "odt": N_("OpenDocument text"),
    "ods": N_("OpenDocument spreadsheet"),
    "odp": N_("OpenDocument presentation"),
    "odg": N_("OpenDocument drawing"),
    "epub": N_("EPUB book"),
    "zip": N_("ZIP archive"),
    "jar": N_("Java program"),
    "apk": N_("Android app"),
    "tar": N_("tar archive"),
    "gzip": N_("gzip-compressed file"),
    "bzip2": N_("bzip2-compressed file"),
    "xz": N_("xz-compressed file"),
    "zstd": N_("zstd-compressed file"),
    "7z": N_("7-Zip archive"),
    "rar": N_("RAR archive"),
    "elf": N_("Linux program (ELF)"),
    "pe": N_("Windows program"),
    "macho": N_("macOS program"),
    "script": N_("script"),
    "mp3": N_("MP3 audio"),
    "flac": N_("FLAC audio"),
    "ogg": N_("Ogg audio or video"),
    "wav": N_("WAV audio"),
    "aiff": N_("AIFF audio"),
    "asf": N_("Windows Media audio or video"),
    "matroska": N_("Matroska or WebM video"),
    "avi": N_("AVI video"),
    "mp4": N_("MP4 video or audio"),
    "quicktime": N_("QuickTime video"),
    "html": N_("HTML page"),
    "svg": N_("SVG image"),
    "xml": N_("XML"),
    "text": N_("text"),
    "empty": N_("empty"),
    "unknown": N_("unknown"),
}

# The mark between groups of three digits in a size: a comma in English; in Russian a
# no-break space, since "1,234" reads there as one point two three four.
THOUSANDS_SEPARATOR = N_(",")


def text(key: str) -> str:
    """TEXT[key] in the current language, its ``{fields}`` still to fill."""
    return _(TEXT[key])


def status(key: str) -> str:
    return _(STATUS[key])


def flag(code: str) -> str:
    """FLAGS[code] in the current language; an unknown code as it is."""
    return _(FLAGS[code]) if code in FLAGS else code


def kind(name: str) -> str:
    """KINDS[name] in the current language; an unknown name as it is."""
    return _(KINDS[name]) if name in KINDS else name


def byte_count(count: int) -> str:
    """A size in bytes, its digits grouped and its noun agreeing with the number, as the language wants."""
    grouped = f"{count:,}".replace(",", _(THOUSANDS_SEPARATOR))
    return ngettext("{count} byte", "{count} bytes", count).format(count=grouped)
