"""The `intake` command: a thin click group over setup, the store and the server.

Other modules attach their own commands to `cli` (`@cli.command()` in their module)
and are listed in COMMAND_MODULES so `main` imports them. Every refusal is one
line on stderr and a non-zero exit; no secret is ever printed.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from keys.errors import KeysError
from keys.i18n import YES
from keys.identity import PublicIdentity
from keys.os_errors import os_error_words

from intake.cli_i18n import LANGUAGES as CLI_LANGUAGES
from intake.cli_help import TranslatedGroup, TranslatedOption, option
from intake.cli_i18n import N_, _, language_option, ngettext, pgettext, said, set_language, speak_for_click
from intake.config import DATA_DIR_ENV, Settings, key_inside_data_dir, load_settings
from intake.retention import RetentionPolicy
from intake.onion_keys import OnionKeyError, ensure_onion_keys
from intake.server import DEFAULT_GRACE_PERIOD, ServerError, prepare_data_dir
from intake.serving import DEFAULT_BOOTSTRAP_TIMEOUT, SOCKET_DIR_NAME, TOR_MODES, TipLine, TorPlan, read_torrc_lines
from intake.server_identity import SERVER_PUBLIC_FILE, server_public_key
from intake.setup import DEMO_JOURNALIST_NAME, DemoInfo, ensure_demo_instance, init_data_dir
from intake.store import Store, StoreError
from intake.store.connection import CIPHER_PAGE_SIZE, DatabaseError, files_fault
from intake.store.errors import WrongDatabaseKeyError
from intake.store.newsroom import Newsroom
from intake.tor import DEFAULT_SYSTEM_CONTROL_SOCKET, TorError

# Modules that add commands to `cli` when imported (e.g. the journalist commands).
COMMAND_MODULES: tuple[str, ...] = ("intake.newsroom_cli", "intake.guide.cli", "intake.backup_cli")
DEFAULT_PORT = 8080

data_option = option(
    "--data", "data_dir", required=True, envvar=DATA_DIR_ENV, show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path), help=N_("the instance's data dir"),
)
db_key_option = option(
    "--db-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help=N_("the database key file (default: a systemd credential intake-db-key, else DATA/db.key)"),
)

grace_option = option(
    "--grace-period", type=click.IntRange(0, 3600), default=DEFAULT_GRACE_PERIOD, envvar="INTAKE_GRACE_PERIOD",
    show_envvar=True, show_default=True,
    help=N_("seconds that requests in flight (a slow upload) get to finish when intake is stopped"),
)


class _Group(TranslatedGroup):
    """Turns the errors intake explains, and those the system or the database's files cause, into
    one line and exit status 1; a bug keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WrongDatabaseKeyError:  # the store's own words, in the terminal's language
            raise click.ClickException(_("the database key does not open this database (wrong key, or not an intake database)")) from None
        except (StoreError, KeysError, ServerError, TorError, OnionKeyError) as error:
            raise click.ClickException(said(error)) from None
        except DatabaseError as error:  # what the store does not translate, if it is the files' fault, not a bug
            line = database_error_line(error)
            if line is None:
                raise
            raise click.ClickException(line) from None
        except OSError as error:  # a folder that is missing or read-only, a full disk
            raise click.ClickException(os_error_line(error)) from None


def database_error_line(error: DatabaseError) -> str | None:
    """One line for a database error the files or the disk caused; None for any other (a bug:
    its traceback is worth more than a line)."""
    fault = files_fault(error)
    if fault == "damaged":
        return _("the database cannot be read ({reason}): run `intake check`, and restore a backup if it finds "
                 "damage").format(reason=error)
    if fault == "unusable":
        return _("the database cannot be opened or written ({reason}): check that the data dir and its files belong "
                 "to this user and can be written, and that the disk works").format(reason=error)
    if fault == "full":
        return _("a disk is full: free some space and try again")
    return None


def confirm_or_abort(question: str, refused: str) -> None:
    """click.confirm(question, abort=True), but a Russian yes (д, да) is a yes too: click knows
    only y and yes, and answered «д» with "invalid input"; and a no ends with ``refused``, which
    says what was not done and why, not click's bare "Aborted!" (found by newcomer tests)."""
    choices = _("[y/N]")  # «д» is a yes too
    if click.prompt(f"{question} {choices}", default="", show_default=False).strip().lower() not in YES:
        raise click.ClickException(refused)


def os_error_line(error: OSError) -> str:
    """What went wrong with which path, in one line of the chosen language (keys.os_errors)."""
    return said(os_error_words(error))


def _choose_language(_ctx: click.Context, _param: click.Parameter, language: str | None) -> None:
    set_language(language)


@click.group(cls=_Group, help=N_("intake: a tip line for newsrooms, served as a Tor onion service."))
@click.version_option(package_name="intake", message="%(prog)s %(version)s", cls=TranslatedOption,
                      help=N_("Show the version and exit."))
# Eager: the language is chosen before a command's --help is handled (main() reads it even earlier).
@option("--lang", type=click.Choice(CLI_LANGUAGES), default=None, is_eager=True, expose_value=False,
        callback=_choose_language,
        help=N_("language of the messages (default: from LANGUAGE, LC_ALL, LC_MESSAGES or LANG)"))
def cli() -> None:
    pass


@cli.command(help=N_("Create the data dir, its database and key, and register journalists.\n\n"
                     "On an existing data dir, checks the key and registers any new journalists. "
                     "Shows each journalist key's fingerprint to compare with the journalist "
                     "(`intake-keys fingerprint` on their laptop), as `journalist add` does. "
                     "The key is never written into the data dir unless --db-key-in-data-dir asks for it."))
@data_option
@option("--journalist-key", "journalist_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
        help=N_("a journalist's public key file (repeat for each journalist)"))
@option("--yes", is_flag=True, help=N_("do not ask to confirm the journalists' fingerprints"))
@db_key_option
@option("--db-key-in-data-dir", "key_in_data_dir", is_flag=True,
        help=N_("allow a new store's key in the data dir (DATA/db.key), where a copy of the disk takes it along: "
                "for trials only"))
def init(data_dir: Path, journalist_keys: tuple[Path, ...], yes: bool, db_key_file: Path | None, key_in_data_dir: bool) -> None:
    def confirm(identities: list[PublicIdentity]) -> None:
        for identity in identities:
            click.echo(_("Fingerprint of {name}'s key: {fingerprint}").format(name=identity.name, fingerprint=identity.fingerprint))
        if not yes:
            confirm_or_abort(_("Does each journalist read the same fingerprint on their laptop?"),
                             _("nothing was set up: the fingerprints were not confirmed. Get each public key file again "
                               "from its journalist in person"))

    settings = init_data_dir(data_dir, list(journalist_keys), db_key_file=db_key_file, key_in_data_dir=key_in_data_dir,
                             confirm=confirm)
    click.echo(_("Data dir ready: {folder}").format(folder=settings.data_dir))
    server = server_public_key(settings.data_dir)
    click.echo(_("Server key fingerprint: {fingerprint} (journalists trust {file} with it)")
               .format(fingerprint=server.fingerprint, file=settings.data_dir / SERVER_PUBLIC_FILE))
    echo_counts(prepare_data_dir(data_dir, db_key_file))
    # The onion keys exist from the start, so the addresses can be published (and backed up) before serving.
    source_onion, journalist_onion = ensure_onion_keys(settings.data_dir)
    click.echo(_("Source onion address: {onion}").format(onion=source_onion))
    click.echo(_("Journalist onion address: {onion} (reachable with a journalist's Tor client key)").format(onion=journalist_onion))
    _echo_login_commands(settings, db_key_file)
    click.echo(_("Back up {folder} now (docs/operator.md): whoever holds it can serve these addresses.")
               .format(folder=settings.data_dir / "onion"))
    _warn_if_key_in_data_dir(data_dir, db_key_file)


def _echo_login_commands(settings: Settings, db_key_file: Path | None) -> None:
    """init registers journalists without a login: say, per journalist, the command that gives one."""
    with Store.open(settings) as store:
        waiting = [account.name for account in Newsroom(store).accounts() if account.active and not account.can_log_in]
    if not waiting:
        return
    key_option = f" --db-key-file {_shell_path(db_key_file)}" if db_key_file is not None else ""
    click.echo(_("Journalists without a login yet. Give each one their passphrase, TOTP secret and Tor client key,"
                 " in person, with:"))
    for name in waiting:
        click.echo(f"  intake{language_option()} journalist reset-login --data {_shell_path(settings.data_dir)}{key_option}"
                   f" --name {shlex.quote(name)}")


def _warn_if_key_in_data_dir(data_dir: Path, db_key_file: Path | None) -> None:
    inside = key_inside_data_dir(data_dir, db_key_file)
    if inside is not None:
        click.echo(_("WARNING: the database key is inside the data dir ({path}): anyone with a copy of this disk can "
                     "open the store. Move it out (docs/operator.md, \"The database key\").").format(path=inside), err=True)


@cli.command(help=N_("Open the store and print what it holds: counts, sizes, logins, retention."))
@data_option
@db_key_option
def status(data_dir: Path, db_key_file: Path | None) -> None:
    settings = load_settings(data_dir, db_key_file=db_key_file)
    with Store.open(settings) as store:
        echo_counts(store.counts())
        _echo_store_details(store, settings)
    _warn_if_key_in_data_dir(data_dir, db_key_file)


def _count_labels() -> dict[str, str]:
    """The store's counts, named in the terminal's language (made at each call: the language is set by then)."""
    return {"sources": pgettext("count", "sources"), "submissions": pgettext("count", "submissions"),
            "replies": pgettext("count", "replies"), "journalists": pgettext("count", "journalists"),
            "pending uploads": pgettext("count", "pending uploads")}


def _size_labels() -> dict[str, str]:
    return {"submissions": pgettext("size", "submissions"), "not exported": pgettext("size", "not exported"),
            "replies": pgettext("size", "replies"), "database": pgettext("size", "database"),
            "free in database": pgettext("size", "free in database"), "blobs database": pgettext("size", "blobs database"),
            "free in blobs database": pgettext("size", "free in blobs database"), "slots file": pgettext("size", "slots file")}


def echo_counts(counts: dict[str, int]) -> None:
    labels = _count_labels()
    for name, count in counts.items():
        click.echo(f"{labels.get(name, name)}: {count}")


def _echo_store_details(store: Store, settings: Settings) -> None:
    """Sizes, logins and retention for `intake status`."""
    newsroom = Newsroom(store)
    labels = _size_labels()
    for name, size in newsroom.sizes().items():
        click.echo(f"{labels.get(name, name)}: {_human(size)}")
    if store.page_size == CIPHER_PAGE_SIZE:
        click.echo(_("database pages: {size} KiB").format(size=store.page_size // 1024))
    else:
        click.echo(_("database pages: {size} KiB, the older and slower size: the next start of intake with nothing else "
                     "using the store rewrites it with {new} KiB pages").format(size=store.page_size // 1024, new=CIPHER_PAGE_SIZE // 1024))
    accounts = newsroom.accounts()
    click.echo(_("journalists who can sign in: {able} of {total}").format(able=sum(a.can_log_in for a in accounts), total=len(accounts)))
    policy = RetentionPolicy.load(settings.data_dir)
    click.echo(_("retention (days): exported submissions {exported}, read replies {read}, unused codenames {unused};"
                 " checked every {minutes} min").format(exported=policy.exported_days, read=policy.read_reply_days,
                                                        unused=policy.unused_source_days, minutes=policy.interval_minutes))


def _human(size: int) -> str:
    if size < 1024:
        return ngettext("{size} byte", "{size} bytes", size).format(size=size)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    number = f"{size:.1f}".replace(".", pgettext("decimal separator", "."))
    return {"KiB": _("{number} KiB"), "MiB": _("{number} MiB"), "GiB": _("{number} GiB")}[unit].format(number=number)


def tor_options(command: Callable) -> Callable:
    """--tor, --no-tor and the rarer Tor settings, shared by `serve` and `demo`."""
    options = [
        option("--tor", "tor_mode", type=click.Choice(TOR_MODES, case_sensitive=False), default="launch",
               envvar="INTAKE_TOR", show_envvar=True, show_default=True,
               help=N_("launch: intake's own tor on the Tor network; system: the system tor's control socket; "
                       "offline: tor with the network disabled (addresses only); none: no tor")),
        option("--no-tor", is_flag=True, help=N_("the same as --tor none: serve on 127.0.0.1 only")),
        option("--tor-config", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
               envvar="INTAKE_TOR_CONFIG", show_envvar=True,
               help=N_("extra torrc lines for the tor intake launches; for private test networks only")),
        option("--tor-control-socket", type=click.Path(path_type=Path), default=None,
               envvar="INTAKE_TOR_CONTROL_SOCKET", show_envvar=True,
               help=N_("--tor system: the system tor's control socket [default: {socket}]"),
               help_values={"socket": DEFAULT_SYSTEM_CONTROL_SOCKET}),
        option("--tor-bootstrap-timeout", type=click.FloatRange(0), default=DEFAULT_BOOTSTRAP_TIMEOUT,
               show_default=True, help=N_("seconds to wait for tor to reach the Tor network before saying it could not")),
    ]
    for add_option in reversed(options):
        command = add_option(command)
    return command


def _tor_plan(tor_mode: str, no_tor: bool, tor_config: Path | None, tor_control_socket: Path | None,
              tor_bootstrap_timeout: float) -> TorPlan:
    mode = "none" if no_tor else tor_mode.lower()
    extra = read_torrc_lines(tor_config) if tor_config is not None and mode != "none" else ()
    return TorPlan(mode, extra, tor_control_socket, tor_bootstrap_timeout)


def _show_logs() -> None:
    # intake.tor reports tor's own warnings through logging; show them on stderr as they come.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


@cli.command(help=N_("Serve the tip line: gunicorn for the source and journalist interfaces on unix sockets, "
                     "their onion services through tor, and retention. No TCP port is opened unless --port or "
                     "--journalist-port asks for one. SIGTERM or Ctrl-C stops all of it (requests in flight "
                     "finish first); SIGHUP re-reads the journalists' client-authorisation keys."))
@data_option
@option("--port", type=click.IntRange(1, 65535), default=None,
        help=N_("also serve the source interface on this loopback port (development, tests)"))
@option("--journalist-port", type=click.IntRange(1, 65535), default=None,
        help=N_("also serve the journalist interface on this loopback port"))
@option("--socket-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        envvar="INTAKE_SOCKET_DIR", show_envvar=True,
        help=N_("where the unix sockets tor forwards the onions to are made [default: DATA/{folder}]"),
        help_values={"folder": SOCKET_DIR_NAME})
@grace_option
@tor_options
@db_key_option
def serve(data_dir: Path, port: int | None, journalist_port: int | None, socket_dir: Path | None,
          grace_period: int, db_key_file: Path | None, **tor: Any) -> None:
    plan = _tor_plan(**tor)
    _show_logs()
    prepare_data_dir(data_dir, db_key_file)
    _warn_if_key_in_data_dir(data_dir, db_key_file)
    tip_line = TipLine(data_dir, source_port=port, journalist_port=journalist_port, socket_dir=socket_dir,
                       grace_period=grace_period, db_key_file=db_key_file, tor=plan, say=click.echo)
    raise SystemExit(tip_line.serve())


@cli.command(help=N_("Set up (or reuse) a demo instance and serve it. Not for production."))
@option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
        show_default=True, help=N_("where the demo journalist and data dir live"))
@option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@option("--journalist-port", type=click.IntRange(1, 65535), default=None,
        help=N_("loopback port of the journalist interface [default: --port + 1]"))
@grace_option
@tor_options
def demo(base_dir: Path, port: int, journalist_port: int | None, grace_period: int, **tor: Any) -> None:
    plan = _tor_plan(**tor)
    _show_logs()
    info = ensure_demo_instance(base_dir)
    prepare_data_dir(info.data_dir)
    tip_line = TipLine(info.data_dir, source_port=port, journalist_port=journalist_port or (port + 1 if port < 65535 else port - 1),
                       grace_period=grace_period, tor=plan, say=click.echo)
    raise SystemExit(tip_line.serve(banner=demo_instructions(info, tip_line.source.url, tip_line.journalist.url)))


def _shell_path(path: Path) -> str:
    try:
        path = path.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.quote(str(path))


def demo_instructions(info: DemoInfo, url: str, journalist_url: str) -> str:
    data = _shell_path(info.data_dir)
    bundle = _shell_path(_first_free(info.base_dir, "export{}.bundle"))  # export refuses to overwrite an earlier run's
    out = _shell_path(info.base_dir / "decrypted")
    key = _shell_path(info.secret_key_file)
    passphrase = _shell_path(info.passphrase_file)
    # The commands next to this interpreter: the venv's, e.g. .venv/bin/intake from the repository.
    intake = _shell_path(Path(sys.executable).parent / "intake") + language_option()
    intake_keys = _shell_path(Path(sys.executable).parent / "intake-keys") + language_option()
    return "\n".join([
        "",
        _("intake demo: a tip line for trying things out on this machine. NOT FOR PRODUCTION:"),
        _("the demo journalist's secret key and passphrase sit in {folder}.").format(folder=_shell_path(info.journalist_dir)),
        "",
        _("  Submit a tip:  {url}   (open it in a browser; JavaScript may stay off)").format(url=url),
        "",
        _("  Then, in another terminal, export what was submitted and decrypt it:"),
        f"    {intake} export --data {data} --out {bundle}",
        f"    {intake_keys} decrypt {bundle} --key {key} --passphrase-file {passphrase} --out {out}",
        _("  and open {index}.").format(index=f"{out}/index.html"),
        "",
        _("  The journalist interface ({url}) needs a login; give the demo journalist one with:").format(url=journalist_url),
        f"    {intake} journalist reset-login --data {data} --name {DEMO_JOURNALIST_NAME}",
        "",
        _("Ctrl-C stops the server; run the same command again to continue with the same instance."),
    ])


def _first_free(folder: Path, pattern: str) -> Path:
    """``pattern`` with "" in its {}, else -2, -3, ...: the first name not taken in ``folder``."""
    number = 1
    while (folder / pattern.format("" if number == 1 else f"-{number}")).exists():
        number += 1
    return folder / pattern.format("" if number == 1 else f"-{number}")


def _language_asked(args: list[str]) -> str | None:
    """The value of the group's --lang, read before click parses anything, so that click's own
    messages (usage, a missing option) follow it too; click checks it properly afterwards."""
    for position, arg in enumerate(args):
        if arg == "--lang" and position + 1 < len(args):
            return args[position + 1]
        if arg.startswith("--lang="):
            return arg.partition("=")[2]
        if not arg.startswith("-"):  # the command's name: --lang belongs before it
            return None
    return None


def _language_first(args: list[str]) -> list[str]:
    """--lang moved before the command: it is the group's option, which click takes only there,
    and `intake status --lang ru` was refused as "No such option" (newcomer test)."""
    moved, rest, position = [], [], 0
    while position < len(args):
        arg = args[position]
        if arg == "--":  # what follows is not options
            rest += args[position:]
            break
        if arg == "--lang" and position + 1 < len(args):
            moved += args[position : position + 2]
            position += 2
            continue
        (moved if arg.startswith("--lang=") else rest).append(arg)
        position += 1
    return moved + rest


def main(argv: list[str] | None = None) -> None:
    args = _language_first(sys.argv[1:] if argv is None else list(argv))
    asked = _language_asked(args)
    speak_for_click(asked)
    set_language(asked if asked in CLI_LANGUAGES else None)  # before click parses: even `--help --lang ru` is Russian
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    cli.main(args=args, prog_name="intake")


if __name__ == "__main__":
    main()
