"""`intake backup` and `intake restore`, attached to the `intake` group (see intake.backup)."""

from __future__ import annotations

from pathlib import Path

import click

from intake.backup import make_backup, restore_backup
from intake.cli import cli, data_option, db_key_option, echo_counts
from intake.cli_help import TranslatedArgument, option
from intake.cli_i18n import N_, _
from intake.db_key_recovery import RECOVERY_FILE
from intake.server import prepare_data_dir
from intake.onion_keys import ensure_onion_keys


@cli.command("backup", help=N_("Write the whole instance to one file: the store, both onion keys and the instance's "
                               "secrets.\n\n"
                               "The file opens only with the database key (the secrets are sealed under it), so it is as "
                               "safe to keep as the store itself. It can be made while intake serves."))
@data_option
@option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
        help=N_("the backup file to write (must not exist)"))
@db_key_option
def backup_command(data_dir: Path, out_path: Path, db_key_file: Path | None) -> None:
    counts = make_backup(data_dir, out_path, db_key_file=db_key_file)
    click.echo(_("Wrote {path}: submissions: {submissions}, sources: {sources}, replies: {replies}, "
                 "journalists: {journalists}, and both onion keys.").format(path=out_path, **counts))
    click.echo(_("It opens with the database key only; if that is lost, a journalist recovers it from "
                 "{file} (in the backup) with `intake-keys recover-db-key`.").format(file=RECOVERY_FILE))


@cli.command("restore", help=N_("Rebuild an instance from a backup in a new or empty data dir: same onion addresses, "
                                "every submission.\n\n"
                                "The database key comes from --db-key-file (e.g. the file `intake-keys recover-db-key` "
                                "wrote), $INTAKE_DB_KEY_FILE or the systemd credential, never from the data dir."))
@click.argument("backup", cls=TranslatedArgument, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@data_option
@option("--db-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=N_("the database key file (default: $INTAKE_DB_KEY_FILE or a systemd credential intake-db-key; never "
                "one in the data dir)"))
def restore_command(backup: Path, data_dir: Path, db_key_file: Path | None) -> None:
    settings = restore_backup(backup, data_dir, db_key_file=db_key_file)
    click.echo(_("Restored {backup} into {folder}").format(backup=backup, folder=settings.data_dir))
    echo_counts(prepare_data_dir(settings.data_dir, db_key_file))
    source_onion, journalist_onion = ensure_onion_keys(settings.data_dir)
    click.echo(_("Source onion address: {onion}").format(onion=source_onion))
    click.echo(_("Journalist onion address: {onion}").format(onion=journalist_onion))
    click.echo(_("With the system tor (deploy/setup-debian.sh), run the set-up script now: it gives tor the restored "
                 "source key."))
