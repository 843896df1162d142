"""``intake-keys recover-db-key``: open the server's db-key.recovery on the laptop.

Used to restore a backup on a new server (docs/operator.md, "Backups and recovery"):
the server's own copy of the database key is bound to the old machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keys.errors import KeysError
from keys.files import write_new_file
from keys.i18n import _
from keys.identity import Identity
from keys.recovery import MAX_RECOVERY_FILE, open_db_key


def add_parser(command, passphrase_option, read_passphrase) -> None:
    """Add the subcommand; `command` (which adds a subcommand that takes --lang too), `passphrase_option`
    and `read_passphrase` are intake-keys' own."""
    p = command(
        "recover-db-key",
        _("open the server's db-key.recovery: write its database key to a new file"),
        _("Open a database-key recovery file (db-key.recovery, from the server's data dir or a backup) "
          "with your secret key and write the database key to a new file, mode 0600."),
        epilog=_("Carry the key file to the new server on encrypted media, use it to restore, then destroy it."),
    )
    p.add_argument("recovery_file", metavar=_("RECOVERY_FILE"))
    p.add_argument("--key", required=True, metavar=_("SECRET_FILE"))
    p.add_argument("--out", required=True, metavar=_("KEY_FILE"), help=_("the database key file to write (must not exist)"))
    passphrase_option(p)
    p.set_defaults(run=lambda args: cmd_recover_db_key(args, read_passphrase))


def cmd_recover_db_key(args: argparse.Namespace, read_passphrase) -> int:
    out = Path(args.out)
    if out.exists():
        raise KeysError(_("{path} exists; refusing to overwrite it").format(path=out))
    with open(args.recovery_file, "rb") as f:
        sealed = f.read(MAX_RECOVERY_FILE + 1)
    identity = Identity.load(args.key, read_passphrase(args, _("Passphrase for {key}: ").format(key=args.key)))
    write_new_file(out, open_db_key(sealed, identity), 0o600)
    print(_("database key written to {path} (mode 0600): use it to restore (intake restore --db-key-file), then destroy it")
          .format(path=out))
    return 0
