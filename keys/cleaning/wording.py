"""Every sentence the cleaning report and the triage view show, in one place, for translators.

Plain strings; ``{name}`` fields are filled with ``str.format`` and always
escaped before they reach HTML. Keys are stable: code refers to them, not to
the English text.
"""

from __future__ import annotations

TEXT = {
    "title": "intake: decrypted submissions",
    "heading": "Decrypted submissions",
    "advice": (
        "Open the cleaned copy of a file, not the original, and only on this offline laptop. "
        "A file with a warning may attack the program that opens it: do not open it here "
        "unless you know what the warning means."
    ),
    "not-cleaned-yet": "Files are not cleaned yet: run {command} to make cleaned copies.",
    "no-sources": "No sources yet.",
    "source-id": "Source id",
    "reply-with": "Reply with",
    "day": "Received {day}",
    "files": "Files",
    "column-file": "File",
    "column-size": "Size",
    "column-type": "Type",
    "column-cleaning": "Cleaning",
    "column-warnings": "Warnings",
    "open-cleaned": "cleaned copy",
    "open-original": "original, metadata intact",
    "sent-as": "sent as “{name}”",
    "bytes": "{count} bytes",
    "no-warnings": "none found",
    "nothing-for-you": "Nothing was decrypted for you.",
    "message-too-long": "This message is long: open {name}.",
    "removed": "removed: {fields}",
    "nothing-found": "no metadata found",
    "left": "still listed after cleaning (mostly neutral values): {fields}",
    "more-fields": "{fields} and {count} more",
    "warning": "warning: {text}",
}

# What a cleaning attempt came to: short, for a table cell and a terminal line.
STATUS = {
    "cleaned": "cleaned",
    "not-cleaned": "not cleaned yet",
    "refused": "not cleaned: {reason}",
    "unsupported": "not cleaned: mat2 does not support this format",
    "failed": "not cleaned: mat2 failed ({detail})",
    "timeout": "not cleaned: the cleaner took longer than {seconds} seconds and was stopped",
    "crashed": "not cleaned: the cleaner crashed or went over its time or memory limit",
}

# Why a file was not cleaned or must be handled with care. {detail} comes from the file.
FLAGS = {
    "executable": "a program or script ({detail}): never run it",
    "mismatch": "its content is not what its name (.{detail}) says",
    "macros": "an office document with macros",
    "embedded": "an office document with embedded objects or ActiveX controls",
    "remote": "loads something from the internet when opened ({detail})",
    "script": "contains scripts",
    "pdf-active": "a PDF with active content ({detail})",
    "encrypted": "encrypted ({detail}): its metadata cannot be removed",
    "partly-checked": "large: only the first {detail} were checked",
    "archive-traversal": "an archive with names that leave its folder ({detail}); refused",
    "archive-link": "an archive with links or device files ({detail}); refused",
    "archive-encrypted": "an archive with encrypted members ({detail}); refused",
    "archive-overlap": "an archive whose entries overlap (a zip bomb); refused",
    "archive-bomb": "an archive that would expand to {detail} bytes; refused",
    "archive-nesting": "archives nested more than {detail} deep; refused",
    "archive-members": "an archive with {detail} members; refused",
    "archive-unreadable": "a damaged archive; refused",
    "archive-uninspected": "a compressed archive ({detail}) that is not checked; refused",
}

# Types as detected from the content (sniff.Kind.name).
KINDS = {
    "jpeg": "JPEG image",
    "png": "PNG image",
    "gif": "GIF image",
    "tiff": "TIFF image",
    "heic": "HEIC image",
    "webp": "WebP image",
    "pdf": "PDF document",
    "ole": "old Microsoft Office file",
    "docx": "Word document",
    "docm": "Word document with macros",
    "xlsx": "Excel spreadsheet",
    "xlsm": "Excel spreadsheet with macros",
    "pptx": "PowerPoint presentation",
    "pptm": "PowerPoint presentation with macros",
    "odt": "OpenDocument text",
    "ods": "OpenDocument spreadsheet",
    "odp": "OpenDocument presentation",
    "odg": "OpenDocument drawing",
    "epub": "EPUB book",
    "zip": "ZIP archive",
    "jar": "Java program",
    "apk": "Android app",
    "tar": "tar archive",
    "gzip": "gzip-compressed file",
    "bzip2": "bzip2-compressed file",
    "xz": "xz-compressed file",
    "zstd": "zstd-compressed file",
    "7z": "7-Zip archive",
    "rar": "RAR archive",
    "elf": "Linux program (ELF)",
    "pe": "Windows program",
    "macho": "macOS program",
    "script": "script",
    "mp3": "MP3 audio",
    "flac": "FLAC audio",
    "ogg": "Ogg audio or video",
    "wav": "WAV audio",
    "aiff": "AIFF audio",
    "asf": "Windows Media audio or video",
    "matroska": "Matroska or WebM video",
    "avi": "AVI video",
    "mp4": "MP4 video or audio",
    "quicktime": "QuickTime video",
    "html": "HTML page",
    "svg": "SVG image",
    "xml": "XML",
    "text": "text",
    "empty": "empty",
    "unknown": "unknown",
}
