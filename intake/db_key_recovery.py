"""DATA/db-key.recovery: a copy of the database key sealed to the active journalists.

The server's own copy of the key is bound to the machine (a systemd credential under
its TPM2 or host key), so a dead disk, a firmware update or a move could otherwise
lose every submission. The recovery file is opened only on a journalist's laptop
(`intake-keys recover-db-key`); see keys/recovery.py for its format and
docs/operator.md, "Backups and recovery", for its use. It is rewritten whenever the
list of journalists changes, so it is always sealed to exactly the active ones.
"""

from __future__ import annotations

from pathlib import Path

from keys.files import PendingFile
from keys.recovery import seal_db_key

from intake.store import Store

RECOVERY_FILE = "db-key.recovery"


def write_db_key_recovery(data_dir: Path, db_key: bytes, store: Store) -> Path | None:
    """Seal the key to the store's active journalists, replacing any older recovery file
    atomically. With no active journalist there is nobody to seal to: the file stays as it was."""
    recipients = [recipient.public_key for recipient in store.active_recipients()]
    if not recipients:
        return None
    with PendingFile(Path(data_dir), 0o600) as pending:
        pending.write(seal_db_key(db_key, recipients))
        return pending.commit_replacing(RECOVERY_FILE)
