"""Admin commands for the journalist side, attached to the `intake` group:
`journalist add|list|remove|reset-login`, `export`, `import-replies`, `purge`, `check`.

Secrets printed here (login passphrase, TOTP URI, client-auth line) go to the
terminal once, for the journalist; nothing else ever prints them.
"""

from __future__ import annotations

import io
from pathlib import Path

import click
from keys.files import PendingFile
from keys.identity import fingerprint

from intake.cli import cli, confirm_or_abort, data_option, db_key_option
from intake.cli_help import TranslatedArgument, option
from intake.cli_i18n import N_, _, ngettext, said
from intake.config import Settings, load_settings
from intake.db_key_recovery import write_db_key_recovery
from intake.enrolment import Enrolment, enrol_journalist, load_public_key, reset_login
from intake.exchange import ExportScope, ImportReport, NothingToExportError, PreparedExport, ReplyBundleRefusedError, import_reply_bundle, selected_sources
from intake.retention import PurgeReport, RetentionPolicy, purge
from intake.server_identity import (
    SERVER_PUBLIC_FILE,
    load_server_signing_key,
    rotate_server_signing_key,
    server_box_keys,
    write_server_public_file,
)
from intake.store import Journalist, JournalistExistsError, Store
from intake.store.newsroom import JournalistAccount, Newsroom, UnexportedSubmissionsError

def _restart_note() -> str:
    return _("Send SIGHUP to the running `intake serve` (or restart it) so the journalist onion service "
             "takes the new list of client keys.")


def _settings(data_dir: Path, db_key_file: Path | None) -> Settings:
    return load_settings(data_dir, db_key_file=db_key_file)


@cli.group(help=N_("Register, list and remove journalists, and reset their logins."))
def journalist() -> None:
    pass


@journalist.command("add", help=N_("Register a journalist: every new submission is sealed to their key too.\n\n"
                                   "Prints the key's fingerprint to check with the journalist (read it aloud against "
                                   "`intake-keys fingerprint` on their laptop), then their login passphrase, TOTP set-up and "
                                   "Tor client-authorisation line."))
@data_option
@option("--name", required=True, help=N_("the journalist's name (as in their public key file)"))
@option("--public-key", "public_key", required=True, type=click.Path(dir_okay=False, path_type=Path),
        help=N_("the public key file made by `intake-keys generate` on the air-gapped laptop"))
@option("--yes", is_flag=True, help=N_("do not ask to confirm the fingerprint"))
@option("--replace", is_flag=True, help=N_("key rotation: this key replaces the active journalist's of that name, whose "
                                           "key is retired in the same step (as remove, then add)"))
@option("--even-if-unexported", "even_if_unexported", is_flag=True,
        help=N_("with --replace: retire the old key even though submissions sealed to it were never exported"))
@db_key_option
def journalist_add(data_dir: Path, name: str, public_key: Path, yes: bool, replace: bool, even_if_unexported: bool,
                   db_key_file: Path | None) -> None:
    settings = _settings(data_dir, db_key_file)
    identity = load_public_key(public_key, name)
    click.echo(_("Fingerprint of {name}'s key: {fingerprint}").format(name=identity.name, fingerprint=identity.fingerprint))
    if not yes:
        confirm_or_abort(_("Does the journalist read the same fingerprint on their laptop?"),
                         _("the journalist was not added: the fingerprints were not confirmed. Get the public key file "
                           "again from the journalist in person"))
    with Store.open(settings) as store:
        try:
            enrolment = enrol_journalist(store, settings.data_dir, identity, replacing=replace,
                                         even_if_unexported=even_if_unexported)
        except UnexportedSubmissionsError as error:
            raise click.ClickException(_unexported_line(error)) from None
        except JournalistExistsError as error:
            active = {account.name for account in Newsroom(store).accounts() if account.active}
            if replace or name not in active:  # this very key is registered already (or was): a new one is needed
                raise click.ClickException(said(error)) from None
            raise click.ClickException(_("{error}; for a new login use `intake journalist reset-login --name {name}`, "
                                         "for a new key `intake journalist add --replace`").format(error=said(error), name=name)) from None
        write_db_key_recovery(settings.data_dir, settings.db_key, store)  # the new journalist can recover the key too
    _echo_enrolment(enrolment, settings.data_dir)


@journalist.command("reset-login", help=N_("Give a journalist a new passphrase, TOTP secret and client-auth key (the old ones stop "
                                           "working).\n\n"
                                           "Also the way to give a login to journalists registered by `intake init`."))
@data_option
@option("--name", required=True)
@db_key_option
def journalist_reset_login(data_dir: Path, name: str, db_key_file: Path | None) -> None:
    settings = _settings(data_dir, db_key_file)
    with Store.open(settings) as store:
        enrolment = reset_login(store, settings.data_dir, name)
    _echo_enrolment(enrolment, settings.data_dir)


@journalist.command("list", help=N_("List journalists with their key fingerprints."))
@data_option
@option("--all", "include_removed", is_flag=True, help=N_("include removed journalists"))
@db_key_option
def journalist_list(data_dir: Path, include_removed: bool, db_key_file: Path | None) -> None:
    with Store.open(_settings(data_dir, db_key_file)) as store:
        accounts = Newsroom(store).accounts(include_removed=include_removed)
        keys = {journalist.id: journalist for journalist in store.journalists()}
    for account in accounts:
        state = _("active") if account.active else _("removed {day}").format(day=account.removed_day)
        login = _("can sign in") if account.can_log_in else _("no login (run reset-login)")
        added = _("added {day}").format(day=account.added_day)
        click.echo(f"{account.name}\t{_fingerprint(account, keys)}\t{added}\t{state}\t{login if account.active else ''}".rstrip())


def _fingerprint(account: JournalistAccount, keys: dict[int, Journalist]) -> str:
    """What the journalist's laptop prints (v2, covering the name). The stored column keeps what was
    shown at registration (v1 before names were covered); a removed account's name was retired, so
    it shows the stored one."""
    journalist = keys.get(account.id)
    if not account.active or journalist is None:
        return account.fingerprint
    return fingerprint(account.name, journalist.public_key, journalist.verify_key)


@journalist.command("remove", help=N_("Stop sealing new submissions to a journalist and end their login.\n\n"
                                      "What was already sealed to their key stays readable with it. Key rotation: `add "
                                      "--replace` with the new public key."))
@data_option
@option("--name", required=True)
@option("--even-if-unexported", "even_if_unexported", is_flag=True,
        help=N_("remove the journalist even though submissions sealed to their key were never exported"))
@db_key_option
def journalist_remove(data_dir: Path, name: str, even_if_unexported: bool, db_key_file: Path | None) -> None:
    settings = _settings(data_dir, db_key_file)
    with Store.open(settings) as store:
        try:
            Newsroom(store).remove_journalist(name, even_if_unexported=even_if_unexported)
        except UnexportedSubmissionsError as error:
            raise click.ClickException(_unexported_line(error)) from None
        write_db_key_recovery(settings.data_dir, settings.db_key, store)  # sealed to the remaining journalists only
    click.echo(_("Removed {name}: new submissions are no longer sealed to their key and their login is gone.").format(name=name))
    click.echo(_restart_note())


def _unexported_line(error: UnexportedSubmissionsError) -> str:
    return ngettext(
        "{count} submission sealed to {name}'s key, and to no other active journalist's, was never exported: export "
        "it and decrypt it with that key first; to go on anyway (a key that may be compromised), add "
        "--even-if-unexported",
        "{count} submissions sealed to {name}'s key, and to no other active journalist's, were never exported: export "
        "them and decrypt them with that key first; to go on anyway (a key that may be compromised), add "
        "--even-if-unexported", error.count).format(count=error.count, name=error.name)


def _echo_enrolment(enrolment: Enrolment, data_dir: Path) -> None:
    server_file, server = write_server_public_file(data_dir)
    click.echo("")
    click.echo(_("Give these to {name} in person, once. They are not stored readably and cannot be shown again.")
               .format(name=enrolment.name))
    click.echo("")
    click.echo(_("  Login passphrase:  {passphrase}").format(passphrase=enrolment.passphrase))
    click.echo(_("  TOTP (add to an authenticator app): {uri}").format(uri=enrolment.totp_uri))
    qr = _terminal_qr(enrolment.totp_uri)
    if qr:
        click.echo(qr)
    click.echo(_("  Journalist onion:  {url}").format(url=f"http://{enrolment.journalist_onion}/"))
    click.echo(_("  Tor client authorisation (a line for ClientOnionAuthDir/<name>.auth_private;"))
    click.echo(_("  Tor Browser asks only for the key after 'descriptor:x25519:'):"))
    click.echo(f"    {enrolment.client_auth_line}")
    click.echo("")
    click.echo(_("  Server key file (copy it to the laptop): {path}").format(path=server_file))
    click.echo(_("  Server key fingerprint (read it out; they run `intake-keys trust-server` and compare):"))
    click.echo(f"    {server.fingerprint}")
    click.echo("")
    click.echo(_restart_note())


def _terminal_qr(text: str) -> str | None:
    try:
        import qrcode
    except ImportError:  # optional: the URI above is enough
        return None
    code = qrcode.QRCode(border=2)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


@cli.command("export", help=N_("Write an encrypted export bundle of new submissions (for `intake-keys decrypt`).\n\n"
                               "Submissions are marked exported only once the whole bundle is on disk."))
@data_option
@option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
        help=N_("the bundle file to write (must not exist)"))
@option("--all", "export_all", is_flag=True, help=N_("also submissions exported before"))
@option("--source", "source_ids", multiple=True, help=N_("only this source, by its id or designation (repeatable)"))
@db_key_option
def export_command(data_dir: Path, out_path: Path, export_all: bool, source_ids: tuple[str, ...],
                   db_key_file: Path | None) -> None:
    if out_path.exists():
        raise click.ClickException(_("{path} exists already: choose a new file name").format(path=out_path))
    if any(not given.strip() for given in source_ids):  # an unset variable in a script: not "every source"
        raise click.ClickException(_("--source needs a source's id or designation"))
    with Store.open(_settings(data_dir, db_key_file)) as store:
        chosen = []
        for given in selected_sources(source_ids):
            source_id = Newsroom(store).source_id_for(given)
            if source_id is None:
                raise click.ClickException(_("no source has the id or designation {value!r}").format(value=given))
            chosen.append(source_id)
        scope = ExportScope(only_new=not export_all, source_ids=tuple(dict.fromkeys(chosen)) or None)
        try:
            prepared = PreparedExport(store, scope, load_server_signing_key(data_dir))
        except NothingToExportError as error:
            raise click.ClickException(_("nothing exported: {reason}").format(reason=said(error))) from None
        parent = out_path.parent if str(out_path.parent) else Path(".")
        with PendingFile(parent) as pending:
            for piece in prepared:
                pending.write(piece)
            pending.commit(out_path.name, durable=True, renumber=False)
        prepared.mark_exported()
    click.echo(_("Wrote {path}: submissions: {submissions}, sources: {sources}, ciphertext: {size} bytes, "
                 "sealed to journalists: {journalists}.").format(
        path=out_path, submissions=len(prepared.submission_ids), sources=prepared.source_count,
        size=prepared.stored_bytes, journalists=len(prepared.recipients)))


@cli.command("rotate-signing-key", help=N_("Replace the server's signing key: bundles are signed with the new one from now on.\n\n"
                                           "Every journalist must trust the new key (`intake-keys trust-server`, checked by its "
                                           "fingerprint) before they can decrypt a new bundle. The previous key is kept only to open "
                                           "replies sealed to it; a second rotation forgets it."))
@data_option
@option("--yes", is_flag=True, help=N_("do not ask to confirm"))
def rotate_signing_key_command(data_dir: Path, yes: bool) -> None:
    if not yes:
        confirm_or_abort(_("Journalists cannot decrypt new bundles until they trust the new key. Rotate now?"),
                         _("the server key was not rotated"))
    old, new = rotate_server_signing_key(data_dir)
    click.echo(_("Old server key fingerprint: {fingerprint} (kept only to open replies sealed to it)").format(fingerprint=old.fingerprint))
    click.echo(_("New server key fingerprint: {fingerprint}").format(fingerprint=new.fingerprint))
    click.echo(_("Give every journalist {file} and read them the new fingerprint (they run `intake-keys trust-server`).")
               .format(file=data_dir / SERVER_PUBLIC_FILE))


@cli.command("import-replies", help=N_("Import a reply bundle made with `intake-keys reply` (it must be signed by an active "
                                       "journalist)."))
@data_option
@click.argument("bundle", cls=TranslatedArgument, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@db_key_option
def import_replies_command(data_dir: Path, bundle: Path, db_key_file: Path | None) -> None:
    with Store.open(_settings(data_dir, db_key_file)) as store, open(bundle, "rb") as src:
        try:
            report = import_reply_bundle(store, src, server_box_keys(data_dir))
        except ReplyBundleRefusedError as error:
            raise click.ClickException(said(error)) from None
    for line in _import_lines(report):
        click.echo(line)


def _import_lines(report: ImportReport) -> list[str]:
    """The import in words, one line per source, then the totals (the journalist interface says the same)."""
    out = []
    for line in report.per_source:
        if line.designation is None:
            out.append(_("{count} for a source that is no longer here (id {id}): not imported").format(count=line.missing, id=line.source_id))
        elif line.duplicates:
            out.append(_("{source}: {added} added, {duplicates} already imported before")
                       .format(source=line.designation, added=line.added, duplicates=line.duplicates))
        else:
            out.append(_("{source}: {added} added").format(source=line.designation, added=line.added))
    out.append(_("Replies added: {added}, already here: {duplicates}, not deliverable: {missing} (signed by {journalist})")
               .format(added=report.added, duplicates=report.duplicates, missing=report.missing, journalist=report.journalist))
    return out


@cli.command("purge", help=N_("Run retention now (it also runs on its own schedule under `intake serve`).\n\n"
                              "The policy is in DATA/retention.toml (see docs/journalists.md)."))
@data_option
@db_key_option
def purge_command(data_dir: Path, db_key_file: Path | None) -> None:
    settings = _settings(data_dir, db_key_file)
    policy = RetentionPolicy.load(settings.data_dir)
    click.echo(_("Retention (days): exported submissions {exported}, read replies {read}, sources that never "
                 "submitted {unused}.").format(
        exported=policy.exported_days, read=policy.read_reply_days, unused=policy.unused_source_days))
    with Store.open(settings) as store:
        report = purge(store, policy)
    for line in _purge_lines(report):
        click.echo(line)


def _purge_lines(report: PurgeReport) -> list[str]:
    """What retention deleted, in the terminal's language (the log keeps report.lines(), in English)."""
    return [_("submissions deleted: {count}").format(count=report.submissions),
            _("replies deleted: {count}").format(count=report.replies),
            _("sources deleted: {count}").format(count=report.sources),
            _("source sessions deleted: {count}").format(count=report.source_sessions),
            _("journalist sessions deleted: {count}").format(count=report.journalist_sessions),
            _("failed logins deleted: {count}").format(count=report.failed_logins)]


@cli.command("check", help=N_("Check the store's integrity (SQLCipher page authentication, SQLite structure, foreign "
                              "keys), and read every slot of the slots file in use back."))
@data_option
@db_key_option
def check_command(data_dir: Path, db_key_file: Path | None) -> None:
    with Store.open(_settings(data_dir, db_key_file)) as store:
        problems = Newsroom(store).integrity_problems()
    if problems:
        for problem in problems[:20]:
            click.echo(said(problem), err=True)
        raise click.ClickException(ngettext("the store has {count} integrity problem: restore it from a backup",
                                            "the store has {count} integrity problems: restore it from a backup",
                                            len(problems)).format(count=len(problems)))
    click.echo(_("The store is intact."))
