"""The `intake` command: a thin click group over setup, the store and the server.

Other modules attach their own commands to `cli` (`@cli.command()` in their module)
and are listed in COMMAND_MODULES so `main` imports them. Every refusal is one
line on stderr and a non-zero exit; no secret is ever printed.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

import click
from keys.errors import KeysError

from intake.config import load_settings
from intake.retention import PurgeSchedule
from intake.server import JOURNALIST_APP_FACTORY, GunicornServer, ServerError, prepare_data_dir
from intake.setup import DemoInfo, ensure_demo_instance, init_data_dir
from intake.store import Store, StoreError

# Modules that add commands to `cli` when imported (e.g. the journalist commands).
COMMAND_MODULES: tuple[str, ...] = ("intake.newsroom_cli",)
DEFAULT_PORT = 8080

data_option = click.option(
    "--data", "data_dir", required=True, envvar="INTAKE_DATA", show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path), help="the instance's data dir",
)
db_key_option = click.option(
    "--db-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="the database key file (default: a systemd credential intake-db-key, else DATA/db.key)",
)


class _Group(click.Group):
    """Turns the errors intake explains into one line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (StoreError, KeysError, ServerError) as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
def cli() -> None:
    """intake: a tip line for newsrooms, served as a Tor onion service."""


@cli.command()
@data_option
@click.option("--journalist-key", "journalist_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="a journalist's public key file (repeat for each journalist)")
@db_key_option
def init(data_dir: Path, journalist_keys: tuple[Path, ...], db_key_file: Path | None) -> None:
    """Create the data dir, its database and key, and register journalists.

    On an existing data dir, checks the key and registers any new journalists.
    """
    settings = init_data_dir(data_dir, list(journalist_keys), db_key_file=db_key_file)
    click.echo(f"Data dir ready: {settings.data_dir}")
    _echo_counts(prepare_data_dir(data_dir, db_key_file))


@cli.command()
@data_option
@db_key_option
def status(data_dir: Path, db_key_file: Path | None) -> None:
    """Open the store and print what it holds: counts, sizes, logins, retention."""
    settings = load_settings(data_dir, db_key_file=db_key_file)
    with Store.open(settings) as store:
        _echo_counts(store.counts())
        from intake.newsroom_cli import echo_store_details

        echo_store_details(store, settings)


def _echo_counts(counts: dict[str, int]) -> None:
    for name, count in counts.items():
        click.echo(f"{name}: {count}")


@cli.command()
@data_option
@click.option("--no-tor", is_flag=True, help="serve on 127.0.0.1 only, without onion services")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--journalist-port", type=click.IntRange(1, 65535), default=DEFAULT_PORT + 1, show_default=True,
              help="loopback port of the journalist interface")
@db_key_option
def serve(data_dir: Path, no_tor: bool, port: int, journalist_port: int, db_key_file: Path | None) -> None:
    """Run the tip line under gunicorn on 127.0.0.1 (and the journalist interface, and retention)."""
    if not no_tor:
        raise click.UsageError("serving through Tor is not available in this version yet: pass --no-tor")
    prepare_data_dir(data_dir, db_key_file)
    server = GunicornServer(data_dir, port, db_key_file=db_key_file)
    journalist_server = GunicornServer(data_dir, journalist_port, db_key_file=db_key_file, app_factory=JOURNALIST_APP_FACTORY)
    server.start()
    try:
        journalist_server.start()
        PurgeSchedule(load_settings(data_dir, db_key_file=db_key_file)).start()
        click.echo(f"intake is serving {server.data_dir} at {server.url}, the journalist interface at "
                   f"{journalist_server.url} (Ctrl-C stops it)")
        raise SystemExit(server.wait())
    finally:
        server.stop()
        journalist_server.stop()


@cli.command()
@click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="where the demo journalist and data dir live")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
def demo(base_dir: Path, port: int) -> None:
    """Set up (or reuse) a demo instance and serve it on 127.0.0.1. Not for production."""
    info = ensure_demo_instance(base_dir)
    prepare_data_dir(info.data_dir)
    server = GunicornServer(info.data_dir, port)
    server.start()
    click.echo(demo_instructions(info, server.url))
    raise SystemExit(server.wait())


def _shell_path(path: Path) -> str:
    try:
        path = path.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.quote(str(path))


def demo_instructions(info: DemoInfo, url: str) -> str:
    data = _shell_path(info.data_dir)
    bundle = _shell_path(info.base_dir / "export.bundle")
    out = _shell_path(info.base_dir / "decrypted")
    key = _shell_path(info.secret_key_file)
    passphrase = _shell_path(info.passphrase_file)
    # The commands next to this interpreter: the venv's, e.g. .venv/bin/intake from the repository.
    intake = _shell_path(Path(sys.executable).parent / "intake")
    intake_keys = _shell_path(Path(sys.executable).parent / "intake-keys")
    return "\n".join([
        "",
        "intake demo: a tip line for trying things out on this machine. NOT FOR PRODUCTION:",
        f"the demo journalist's secret key and passphrase sit in {_shell_path(info.journalist_dir)}.",
        "",
        f"  Submit a tip:  {url}   (open it in a browser; JavaScript may stay off)",
        "",
        "  Then, in another terminal, export what was submitted and decrypt it:",
        f"    {intake} export --data {data} --out {bundle}",
        f"    {intake_keys} decrypt {bundle} --key {key} --passphrase-file {passphrase} --out {out}",
        f"  and open {out}/index.html.",
        "",
        "Ctrl-C stops the server; run the same command again to continue with the same instance.",
    ])


def main(argv: list[str] | None = None) -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    cli.main(args=argv, prog_name="intake")


if __name__ == "__main__":
    main()
