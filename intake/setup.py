"""Setting up a data dir (`intake init`) and the self-contained demo instance (`intake demo`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keys.errors import KeysError
from keys.files import write_new_file
from keys.identity import Identity, PublicIdentity
from keys.server_key import trust_server

from intake.cli_i18n import _
from intake.config import (
    DATABASE_KEY,
    DB_FILE,
    DB_KEY_BYTES,
    INSTANCE_SECRET,
    INSTANCE_SECRET_BYTES,
    INSTANCE_SECRET_FILE,
    Settings,
    check_instance_whole,
    db_key_path,
    key_inside_data_dir,
    load_settings,
    read_secret_file,
)
from intake.db_key_recovery import RECOVERY_FILE, write_db_key_recovery
from intake.journalist_auth import generate_login_passphrase
from intake.onion_keys import ensure_onion_keys
from intake.server_identity import SERVER_SIGNING_FILE, create_server_signing_key, server_public_key, write_server_public_file
from intake.store import JournalistExistsError, MissingDatabaseKeyError, Store, StoreError
from intake.told import told

DEMO_JOURNALIST_DIR = "demo-journalist-DO-NOT-USE-IN-PRODUCTION"
DEMO_JOURNALIST_NAME = "demo-journalist"
_DEMO_README = """\
THIS IS A DEMO IDENTITY. DO NOT USE IT IN PRODUCTION.

`intake demo` made this journalist key pair so the tip line can be tried on one
machine. Its secret key and the passphrase that unlocks it sit side by side on
a networked machine, which defeats the point of intake: a real journalist's
secret key is made and kept only on an air-gapped laptop
(`intake-keys generate`), and only its public key goes to the server.

ЭТО ДЕМОНСТРАЦИОННЫЙ КЛЮЧ. НЕ ИСПОЛЬЗУЙТЕ ЕГО ДЛЯ РАБОТЫ.

`intake demo` создал эту пару ключей журналиста, чтобы канал можно было
попробовать на одном компьютере. Секретный ключ и парольная фраза к нему лежат
рядом, на компьютере, подключённом к сети, а это сводит на нет смысл intake:
настоящий секретный ключ журналиста создаётся и хранится только на ноутбуке,
который никогда не подключается к сети (`intake-keys generate`), и на сервер
попадает только открытый ключ.
"""


class SetupError(StoreError):
    """The data dir cannot be set up as asked (bad journalist key file, nothing to register...)."""


class JournalistKeyFileError(SetupError):
    """A journalist's public key file is missing, unreadable or not a public key."""


def load_journalist_key(path: Path) -> PublicIdentity:
    """A journalist's public key file (from `intake-keys generate`), with one clear
    error for each way reading it can fail. `intake init` and `intake journalist add`
    both read keys through this."""
    try:
        return PublicIdentity.load(path)
    except FileNotFoundError:
        raise JournalistKeyFileError(_("the journalist public key file {path} does not exist").format(path=path)) from None
    except OSError:
        raise JournalistKeyFileError(_("the journalist public key file {path} cannot be read").format(path=path)) from None
    except KeysError as error:
        raise JournalistKeyFileError(told("{path}: {reason}", path=path, reason=error)) from None


def _load_journalist_keys(paths: list[Path]) -> list[PublicIdentity]:
    identities = [load_journalist_key(path) for path in paths]
    names = [identity.name for identity in identities]
    if len(set(names)) != len(names):
        raise SetupError(_("two of the journalist key files have the same name"))
    return identities


def _register(store: Store, identities: list[PublicIdentity], confirm: Callable[[list[PublicIdentity]], None]) -> bool:
    """Register the journalists not yet registered, once ``confirm`` accepts them (it raises
    to refuse); True if there were any. The same name with another key is refused."""
    known = {journalist.name: journalist for journalist in store.journalists()}
    new = []
    for identity in identities:
        existing = known.get(identity.name)
        if existing is None:
            new.append(identity)
        elif existing.public_key != bytes(identity.encryption_key) or existing.verify_key != bytes(identity.verify_key):
            raise JournalistExistsError(_("a journalist named {name} is already registered with another key").format(name=repr(identity.name)))
    if new:
        confirm(new)
    for identity in new:
        store.register_journalist(identity.name, bytes(identity.encryption_key), bytes(identity.verify_key), identity.fingerprint)
    return bool(new)


class DatabaseKeyInDataDirError(SetupError):
    """A new store would be keyed from a file inside its own data dir, and nobody asked for that."""


def init_data_dir(data_dir: Path, journalist_public_files: list[Path], *, db_key_file: Path | None = None,
                  key_in_data_dir: bool = False,
                  confirm: Callable[[list[PublicIdentity]], None] = lambda identities: None) -> Settings:
    """Create (or, if it exists, check and extend) an instance's data dir.

    A fresh dir gets mode 0700, a database key (0600, unless one is given), an
    instance secret, the server's signing key (and its public file for journalists),
    the database with the journalists registered, and db-key.recovery (the key sealed
    to them). On an existing dir the key must open the database; new journalists are
    added. ``confirm`` sees the journalists about to be registered (to show their
    fingerprints) and may refuse by raising.
    A new store keyed from a file inside its own data dir (DATA/db.key, where a copy
    of the disk would take the key along with the database) is refused unless
    `key_in_data_dir` asks for exactly that (`intake demo`, tests).
    Any failure leaves the dir as it was.
    """
    data_dir = Path(data_dir)
    check_instance_whole(data_dir)
    identities = _load_journalist_keys([Path(path) for path in journalist_public_files])
    if (data_dir / DB_FILE).exists():
        settings = load_settings(data_dir, db_key_file=db_key_file)
        with Store.open(settings) as store:
            if _register(store, identities, confirm) or not (data_dir / RECOVERY_FILE).exists():
                write_db_key_recovery(data_dir, settings.db_key, store)
        write_server_public_file(data_dir)  # makes the signing key first if the dir predates it
        ensure_onion_keys(data_dir)  # a dir that only ever served without tor (`intake demo --no-tor`) lacked them
        return settings
    if not identities:
        raise SetupError(_("a new data dir needs at least one journalist public key (--journalist-key)"))
    inside = key_inside_data_dir(data_dir, db_key_file)
    if inside is not None and not key_in_data_dir:
        raise DatabaseKeyInDataDirError(
            _("refusing to keep the database key in the data dir ({path}): a copy of the disk would open the store. "
              "Give --db-key-file with a path outside it (on a server: a systemd credential, as deploy/setup-debian.sh "
              "makes), or --db-key-in-data-dir to accept that risk (trials only)").format(path=inside))
    confirm(identities)

    created: list[Path] = []
    try:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700, parents=True)
            created.append(data_dir)
        os.chmod(data_dir, 0o700)
        key_path = db_key_path(data_dir, db_key_file)
        if not key_path.exists():
            if db_key_file is None and key_path.parent != data_dir:
                raise MissingDatabaseKeyError(_("the database key file {path} (from the environment) does not exist").format(path=key_path))
            write_new_file(key_path, secrets.token_bytes(DB_KEY_BYTES).hex().encode() + b"\n", 0o600)
            created.append(key_path)
        read_secret_file(key_path, DB_KEY_BYTES, DATABASE_KEY, MissingDatabaseKeyError)
        secret_path = data_dir / INSTANCE_SECRET_FILE
        if not secret_path.exists():
            write_new_file(secret_path, secrets.token_bytes(INSTANCE_SECRET_BYTES).hex().encode() + b"\n", 0o600)
            created.append(secret_path)
        if not (data_dir / SERVER_SIGNING_FILE).exists():
            created.append(create_server_signing_key(data_dir))
        created.append(write_server_public_file(data_dir)[0])
        created += [data_dir / (DB_FILE + suffix) for suffix in ("", "-wal", "-shm")]
        created.append(data_dir / RECOVERY_FILE)
        settings = _settings_for_new_dir(data_dir, db_key_file)
        with Store.create(settings) as store:
            _register(store, identities, lambda confirmed: None)
            write_db_key_recovery(data_dir, settings.db_key, store)
        created += [data_dir / "onion", data_dir / "onion" / "source.key", data_dir / "onion" / "journalist.key"]
        ensure_onion_keys(data_dir)  # a whole instance from the start, whether or not tor ever runs on it
        return load_settings(data_dir, db_key_file=db_key_file)
    except BaseException:
        for path in reversed(created):
            if not path.is_dir():
                path.unlink(missing_ok=True)
            elif not any(path.iterdir()):
                path.rmdir()
        raise


def _settings_for_new_dir(data_dir: Path, db_key_file: Path | None) -> Settings:
    # load_settings() insists on an existing database; the first open creates it.
    return Settings(
        data_dir=data_dir,
        db_key=read_secret_file(db_key_path(data_dir, db_key_file), DB_KEY_BYTES, DATABASE_KEY, MissingDatabaseKeyError),
        instance_secret=read_secret_file(data_dir / INSTANCE_SECRET_FILE, INSTANCE_SECRET_BYTES, INSTANCE_SECRET),
    )


@dataclass(frozen=True)
class DemoInfo:
    base_dir: Path
    journalist_dir: Path
    secret_key_file: Path
    public_key_file: Path
    passphrase_file: Path
    data_dir: Path


def ensure_demo_instance(base_dir: Path) -> DemoInfo:
    """A demo journalist identity and a data dir under `base_dir`; reuses what a previous run made."""
    base_dir = Path(base_dir).resolve()
    journalist_dir = base_dir / DEMO_JOURNALIST_DIR
    info = DemoInfo(
        base_dir=base_dir,
        journalist_dir=journalist_dir,
        secret_key_file=journalist_dir / "journalist.secret",
        public_key_file=journalist_dir / "journalist.public",
        passphrase_file=journalist_dir / "passphrase.txt",
        data_dir=base_dir / "data",
    )
    journalist_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not info.public_key_file.exists():
        for path in (info.secret_key_file, info.passphrase_file):
            path.unlink(missing_ok=True)  # leftovers of an interrupted run, useless without the rest
        passphrase = generate_login_passphrase()  # seven EFF words, like a journalist's login
        identity = Identity.generate(DEMO_JOURNALIST_NAME)
        write_new_file(info.passphrase_file, passphrase.encode() + b"\n", 0o600)
        identity.save(info.secret_key_file, passphrase)
        identity.public.save(info.public_key_file)  # written last: its presence means the identity is whole
        readme = journalist_dir / "README.txt"
        if not readme.exists():
            write_new_file(readme, _DEMO_README.encode(), 0o644)
    init_data_dir(info.data_dir, [info.public_key_file], key_in_data_dir=True)  # a demo: labelled, not for production
    # The demo laptop is this machine: it trusts the demo server's key as a journalist would after checking it.
    trust_server(info.secret_key_file, server_public_key(info.data_dir))
    return info
