"""source.json: what a decrypted source folder records about its source.

``{"source_id", "designation", "reply_public_key" (base64), "items": [...]}``;
``intake-keys reply`` reads the id and key from it, ``decrypt`` the items done.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from keys.bundle import MAX_DESIGNATION
from keys.errors import FormatError
from keys.files import PendingFile

SOURCE_RECORD = "source.json"
MAX_SOURCE_RECORD = 64 << 20


def load_source_record(folder: Path, missing_ok: bool = False) -> dict | None:
    """Read and check a folder's source.json (it is ours, but may have been edited)."""
    path = folder / SOURCE_RECORD
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_RECORD + 1)
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return None
        raise FormatError(f"{folder} is not a source folder from intake-keys decrypt (no {SOURCE_RECORD})") from None
    try:
        record = json.loads(data)
        key = base64.b64decode(record["reply_public_key"], validate=True)
        valid = (
            len(data) <= MAX_SOURCE_RECORD
            and isinstance(record["source_id"], str)
            and isinstance(record["designation"], str)
            and 0 < len(record["designation"]) <= MAX_DESIGNATION
            and len(key) == 32
            and isinstance(record["items"], list)
            and all(isinstance(entry, dict) and isinstance(entry.get("item_id"), str) for entry in record["items"])
        )
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise FormatError(f"{path} is damaged")
    return record


def save_source_record(folder: Path, record: dict) -> None:
    # Not fsynced: like the decrypted files it describes, it can be redone by decrypting again.
    with PendingFile(folder) as pending:
        pending.write(json.dumps(record, indent=2, ensure_ascii=False).encode())
        pending.commit_replacing(SOURCE_RECORD, durable=False)
