"""Setting up a data dir (`intake init`) and the self-contained demo instance (`intake demo`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from keys.errors import KeysError
from keys.files import write_new_file
from keys.identity import Identity, PublicIdentity

from intake.config import (
    DB_FILE,
    DB_KEY_BYTES,
    INSTANCE_SECRET_BYTES,
    INSTANCE_SECRET_FILE,
    Settings,
    db_key_path,
    load_settings,
    read_secret_file,
)
from intake.journalist_auth import generate_login_passphrase
from intake.server_identity import SERVER_SIGNING_FILE, create_server_signing_key, ensure_server_signing_key
from intake.store import JournalistExistsError, MissingDatabaseKeyError, Store, StoreError

DEMO_JOURNALIST_DIR = "demo-journalist-DO-NOT-USE-IN-PRODUCTION"
DEMO_JOURNALIST_NAME = "demo-journalist"
_DEMO_README = """\
THIS IS A DEMO IDENTITY. DO NOT USE IT IN PRODUCTION.

`intake demo` made this journalist key pair so the tip line can be tried on one
machine. Its secret key and the passphrase that unlocks it sit side by side on
a networked machine, which defeats the point of intake: a real journalist's
secret key is made and kept only on an air-gapped laptop
(`intake-keys generate`), and only its public key goes to the server.
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
        raise JournalistKeyFileError(f"the journalist public key file {path} does not exist") from None
    except OSError:
        raise JournalistKeyFileError(f"the journalist public key file {path} cannot be read") from None
    except KeysError as error:
        raise JournalistKeyFileError(f"{path}: {error}") from None


def _load_journalist_keys(paths: list[Path]) -> list[PublicIdentity]:
    identities = [load_journalist_key(path) for path in paths]
    names = [identity.name for identity in identities]
    if len(set(names)) != len(names):
        raise SetupError("two of the journalist key files have the same name")
    return identities


def _register(store: Store, identities: list[PublicIdentity]) -> None:
    """Register the journalists not yet registered; the same name with another key is refused."""
    known = {journalist.name: journalist for journalist in store.journalists()}
    new = []
    for identity in identities:
        existing = known.get(identity.name)
        if existing is None:
            new.append(identity)
        elif existing.public_key != bytes(identity.encryption_key) or existing.verify_key != bytes(identity.verify_key):
            raise JournalistExistsError(f"a journalist named {identity.name!r} is already registered with another key")
    for identity in new:
        store.register_journalist(identity.name, bytes(identity.encryption_key), bytes(identity.verify_key), identity.fingerprint)


def init_data_dir(data_dir: Path, journalist_public_files: list[Path], *, db_key_file: Path | None = None) -> Settings:
    """Create (or, if it exists, check and extend) an instance's data dir.

    A fresh dir gets mode 0700, a database key (0600, unless one is given), an
    instance secret, the server's signing key and the database with the journalists registered. On an
    existing dir the key must open the database; new journalists are added.
    Any failure leaves the dir as it was.
    """
    data_dir = Path(data_dir)
    identities = _load_journalist_keys([Path(path) for path in journalist_public_files])
    if (data_dir / DB_FILE).exists():
        settings = load_settings(data_dir, db_key_file=db_key_file)
        with Store.open(settings) as store:
            _register(store, identities)
        ensure_server_signing_key(data_dir)
        return settings
    if not identities:
        raise SetupError("a new data dir needs at least one journalist public key (--journalist-key)")

    created: list[Path] = []
    try:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700, parents=True)
            created.append(data_dir)
        os.chmod(data_dir, 0o700)
        key_path = db_key_path(data_dir, db_key_file)
        if not key_path.exists():
            if db_key_file is None and key_path.parent != data_dir:
                raise MissingDatabaseKeyError(f"the database key file {key_path} (from the environment) does not exist")
            write_new_file(key_path, secrets.token_bytes(DB_KEY_BYTES).hex().encode() + b"\n", 0o600)
            created.append(key_path)
        read_secret_file(key_path, DB_KEY_BYTES, "database key", MissingDatabaseKeyError)
        secret_path = data_dir / INSTANCE_SECRET_FILE
        if not secret_path.exists():
            write_new_file(secret_path, secrets.token_bytes(INSTANCE_SECRET_BYTES).hex().encode() + b"\n", 0o600)
            created.append(secret_path)
        if not (data_dir / SERVER_SIGNING_FILE).exists():
            created.append(create_server_signing_key(data_dir))
        created += [data_dir / (DB_FILE + suffix) for suffix in ("", "-wal", "-shm")]
        settings = _settings_for_new_dir(data_dir, db_key_file)
        with Store.create(settings) as store:
            _register(store, identities)
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
        db_key=read_secret_file(db_key_path(data_dir, db_key_file), DB_KEY_BYTES, "database key", MissingDatabaseKeyError),
        instance_secret=read_secret_file(data_dir / INSTANCE_SECRET_FILE, INSTANCE_SECRET_BYTES, "instance secret"),
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
    init_data_dir(info.data_dir, [info.public_key_file])
    return info
