"""`intake publish`: the guide and the signed onion address, for the newsroom's website."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from intake.cli import cli, data_option, db_key_option
from intake.cli_help import option
from intake.cli_i18n import N_, _
from intake.config import load_settings
from intake.guide import BRIDGES_FILE, STALE_AFTER_DAYS, GuideError, load_bridge_advice
from intake.guide.publish import VERIFY_COMMAND, Facts, page_name, public_key_line, publish
from intake.retention import RetentionPolicy
from intake.server_identity import ensure_server_signing_key, load_server_signing_key
from intake.store import Store
from intake.store.newsroom import Newsroom
from intake.onion_keys import ensure_onion_keys


@cli.command("publish", help=N_("Write the guide for sources (Russian and English, HTML and plain text) and the onion "
                                "address with the journalists' key fingerprints, signed by the server "
                                "(docs/publishing.md)."))
@data_option
@option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help=N_("folder to write the pages and the signed address into (made if missing; files in it are replaced)"))
@option("--bridges", "bridges_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=BRIDGES_FILE, show_default=True, help=N_("the dated bridge advice (TOML) to publish"))
@db_key_option
def publish_command(data_dir: Path, out_dir: Path, bridges_file: Path, db_key_file: Path | None) -> None:
    settings = load_settings(data_dir, db_key_file=db_key_file)
    try:
        bridges = load_bridge_advice(bridges_file)
    except GuideError as error:
        raise click.ClickException(str(error)) from None
    retention = RetentionPolicy.load(settings.data_dir)
    with Store.open(settings) as store:
        journalists = tuple((a.name, a.fingerprint) for a in Newsroom(store).accounts())
    source_onion, _journalist_onion = ensure_onion_keys(settings.data_dir)
    ensure_server_signing_key(settings.data_dir)
    signing_key = load_server_signing_key(settings.data_dir)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    facts = Facts(source_onion, journalists, public_key_line(signing_key.verify_key), today)
    publish(out_dir, facts, signing_key, retention, bridges)

    click.echo(_("Wrote the guide for sources to {folder}:").format(folder=out_dir))
    for language in ("en", "ru"):
        click.echo(f"  {page_name(language, 'html')}  {page_name(language, 'txt')}")
    click.echo(_("Source onion address: {onion}").format(onion=source_onion))
    click.echo(_("Journalists' keys in the signed statement: {count}").format(count=len(journalists)))
    click.echo(_("Anyone can check the signature in that folder with:"))
    click.echo(f"  {VERIFY_COMMAND}")
    age = bridges.age_days(today)
    if age > STALE_AFTER_DAYS:
        click.echo(_("Warning: the bridge advice was last checked {days} days ago ({file}): check it and update its date.")
                   .format(days=age, file=bridges_file), err=True)
