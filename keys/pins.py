"""Sources pinned on the laptop: once seen, a source's id, designation and reply key stay together.

``pinned-sources.json`` beside the journalist's secret key file::

    {"format": "intake-pinned-sources", "version": 1,
     "sources": [{"source_id": "...", "designation": "brave otter", "reply_public_key": "<base64>"}]}

A later bundle that gives a pinned source id another designation or reply key,
or a pinned reply key to another source id, is refused before anything is
written: replies would otherwise go to whoever swapped the key. The server signs
its bundles, so this guards against the server itself (or its stolen key).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path

from keys.bundle import check_designation
from keys.bundle_reader import ManifestSource
from keys.errors import FormatError, PinnedSourceError
from keys.files import PendingFile
from keys.strict_json import b64_key, loads
from keys.told import told

PINS_FILE = "pinned-sources.json"
MAX_PINS_FILE = 256 << 20


def pins_path(secret_key_file: str | os.PathLike) -> Path:
    return Path(secret_key_file).resolve().parent / PINS_FILE


def load_pins(path: Path) -> dict[str, tuple[str, bytes]]:
    """source id -> (designation, reply key); empty when the file does not exist yet."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PINS_FILE + 1)
    except FileNotFoundError:
        return {}
    doc = loads(data, str(path))
    if (len(data) > MAX_PINS_FILE or not isinstance(doc, dict) or set(doc) != {"format", "version", "sources"}
            or doc["format"] != "intake-pinned-sources" or type(doc["version"]) is not int or doc["version"] != 1
            or not isinstance(doc["sources"], list)):
        raise FormatError(told("{path} is damaged", path=path))
    pins: dict[str, tuple[str, bytes]] = {}
    for entry in doc["sources"]:
        if not isinstance(entry, dict) or set(entry) != {"source_id", "designation", "reply_public_key"}:
            raise FormatError(told("{path} is damaged", path=path))
        source_id = entry["source_id"]
        if not isinstance(source_id, str) or source_id in pins:
            raise FormatError(told("{path} is damaged", path=path))
        pins[source_id] = (check_designation(entry["designation"]), b64_key(entry["reply_public_key"], 32, told("a key in {path}", path=path)))
    return pins


def check_and_pin(secret_key_file: str | os.PathLike, sources: Sequence[ManifestSource]) -> int:
    """Refuse ``sources`` if any contradicts a pin; pin the new ones. Returns how many are new."""
    path = pins_path(secret_key_file)
    pins = load_pins(path)
    owners = {key: source_id for source_id, (_, key) in pins.items()}
    new = 0
    for source in sources:
        pinned = pins.get(source.source_id)
        if pinned is not None and pinned != (source.designation, source.reply_public_key):
            raise PinnedSourceError(told(
                "REFUSED: this bundle changes the designation or reply key of source {source_id} (pinned as "
                "{designation!r} in {path}); it may be forged: nothing was written, tell your security contact",
                source_id=source.source_id, designation=pinned[0], path=path))
        owner = owners.get(source.reply_public_key)
        if owner is not None and owner != source.source_id:
            raise PinnedSourceError(told(
                "REFUSED: this bundle gives source {source_id} the reply key of source {owner} (pinned in {path}); "
                "it may be forged: nothing was written, tell your security contact",
                source_id=source.source_id, owner=owner, path=path))
        if pinned is None:
            pins[source.source_id] = (source.designation, source.reply_public_key)
            owners[source.reply_public_key] = source.source_id
            new += 1
    if new:
        doc = {
            "format": "intake-pinned-sources",
            "version": 1,
            "sources": [
                {"source_id": source_id, "designation": designation, "reply_public_key": base64.b64encode(key).decode("ascii")}
                for source_id, (designation, key) in sorted(pins.items())
            ],
        }
        with PendingFile(path.parent) as pending:
            pending.write(json.dumps(doc, indent=1, ensure_ascii=False).encode())
            pending.commit_replacing(path.name)
    return new
