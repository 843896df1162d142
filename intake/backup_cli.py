"""`intake backup` and `intake restore`, attached to the `intake` group (see intake.backup)."""

from __future__ import annotations

from pathlib import Path

import click

from intake.backup import make_backup, restore_backup
from intake.cli import cli, data_option, db_key_option
from intake.db_key_recovery import RECOVERY_FILE
from intake.server import prepare_data_dir
from intake.onion_keys import ensure_onion_keys


@cli.command("backup")
@data_option
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="the backup file to write (must not exist)")
@db_key_option
def backup_command(data_dir: Path, out_path: Path, db_key_file: Path | None) -> None:
    """Write the whole instance to one file: the store, both onion keys and the instance's secrets.

    The file opens only with the database key (the secrets are sealed under it), so it is as
    safe to keep as the store itself. It can be made while intake serves.
    """
    counts = make_backup(data_dir, out_path, db_key_file=db_key_file)
    click.echo(f"Wrote {out_path}: {counts['submissions']} submissions from {counts['sources']} sources, "
               f"{counts['replies']} replies, {counts['journalists']} journalists, and both onion keys.")
    click.echo(f"It opens with the database key only; if that is lost, a journalist recovers it from "
               f"{RECOVERY_FILE} (in the backup) with `intake-keys recover-db-key`.")


@cli.command("restore")
@click.argument("backup", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@data_option
@db_key_option
def restore_command(backup: Path, data_dir: Path, db_key_file: Path | None) -> None:
    """Rebuild an instance from a backup in a new or empty data dir: same onion addresses, every submission.

    The database key comes from --db-key-file (e.g. the file `intake-keys recover-db-key` wrote),
    $INTAKE_DB_KEY_FILE or the systemd credential, never from the data dir.
    """
    settings = restore_backup(backup, data_dir, db_key_file=db_key_file)
    click.echo(f"Restored {backup} into {settings.data_dir}")
    for name, count in prepare_data_dir(settings.data_dir, db_key_file).items():
        click.echo(f"{name}: {count}")
    source_onion, journalist_onion = ensure_onion_keys(settings.data_dir)
    click.echo(f"Source onion address: {source_onion}")
    click.echo(f"Journalist onion address: {journalist_onion}")
    click.echo("With the system tor (deploy/setup-debian.sh), run the set-up script now: it gives tor the restored "
               "source key.")
