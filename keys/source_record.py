"""source.json: what a decrypted source folder records about its source.

``{"source_id", "designation", "reply_public_key" (base64), "server_key", "items": [...]}``;
``intake-keys reply`` reads the id, the key and the server's key fingerprint
(``server_key``, absent in records written before signed bundles) from it,
``decrypt`` the items done. Read with the strict JSON rules of every reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from keys.bundle import MAX_DESIGNATION, SOURCE_ID
from keys.errors import FormatError
from keys.files import PendingFile
from keys.strict_json import b64_key, loads
from keys.told import told

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
        if not folder.exists():
            raise FormatError(told("{folder} does not exist: name a source's folder in your decrypted export, as its index.html lists them", folder=folder)) from None
        raise FormatError(told("{folder} is not a source folder from intake-keys decrypt (no {record})", folder=folder, record=SOURCE_RECORD)) from None
    try:
        if len(data) > MAX_SOURCE_RECORD:
            raise FormatError(told("oversized"))
        record = loads(data, str(path))
        if not isinstance(record, dict):
            raise FormatError(told("not an object"))
        b64_key(record["reply_public_key"], 32, told("the reply key"))
        valid = (
            isinstance(record["designation"], str)
            and 0 < len(record["designation"]) <= MAX_DESIGNATION
            and isinstance(record["source_id"], str)
            and SOURCE_ID.fullmatch(record["source_id"]) is not None
            and isinstance(record.get("server_key", ""), str)
            and isinstance(record["items"], list)
            and all(isinstance(entry, dict) and isinstance(entry.get("item_id"), str) for entry in record["items"])
        )
    except (FormatError, KeyError):
        valid = False
    if not valid:
        raise FormatError(told("{path} is damaged", path=path))
    return record


def save_source_record(folder: Path, record: dict, durable: bool = False) -> None:
    """Replace the record atomically; ``durable``: fsynced (decrypt does so once its files are)."""
    with PendingFile(folder) as pending:
        pending.write(json.dumps(record, indent=2, ensure_ascii=False).encode())
        pending.commit_replacing(SOURCE_RECORD, durable=durable)
