"""Settings of one intake instance: where its data lives, its secrets, its limits.

Everything the app, the store and the CLI need comes from one `Settings` object
made by `load_settings`; nothing else reads the environment for configuration
(the gunicorn settings in deploy/gunicorn.conf.py and intake.body_pace aside).
An operator sets the limits below through `INTAKE_*` variables (docs/operator.md),
read by `load_settings_from_environment` in each gunicorn worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from intake.store.errors import DamagedInstanceError, MissingDatabaseKeyError, NotInitialisedError, SecretFileError
from intake.told import Told, told

DB_FILE = "intake.db"
DEFAULT_DB_KEY_FILE = "db.key"
INSTANCE_SECRET_FILE = "instance.secret"
DB_KEY_BYTES = 32
INSTANCE_SECRET_BYTES = 32
# systemd's LoadCredential= / LoadCredentialEncrypted= name (deploy/intake.service).
SYSTEMD_CREDENTIAL = "intake-db-key"
DB_KEY_FILE_ENV = "INTAKE_DB_KEY_FILE"
DATA_DIR_ENV = "INTAKE_DATA"  # how gunicorn's workers learn their data dir (intake.server sets it)

# Argon2id cost of one codename derivation, measured on the development machine
# (AMD EPYC, 2 cores; PyNaCl 1.6): opslimit 5 with 128 MiB takes 0.33-0.38 s
# (opslimit 4: 0.27-0.30 s; opslimit 6: 0.46-0.50 s). With kdf_concurrency = 2
# a worker needs at most 256 MiB for derivations at once, released afterwards.
KDF_OPSLIMIT = 5
KDF_MEMLIMIT = 128 * 1024 * 1024

# The languages of the source and journalist pages (each has its catalogue in intake/translations).
PAGE_LANGUAGES: dict[str, str] = {"en": "English", "ru": "Русский"}
SOURCE_LANGUAGE_ENV = "INTAKE_SOURCE_LANGUAGE"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_key: bytes = field(repr=False)  # SQLCipher key; repr=False keeps it out of tracebacks and logs
    instance_secret: bytes = field(repr=False)  # Flask SECRET_KEY and the codename salt derive from it
    max_request_bytes: int = 500 * 1024 * 1024  # $INTAKE_MAX_UPLOAD_MIB
    # The source pages' language until a visitor picks one ($INTAKE_SOURCE_LANGUAGE); None: the
    # browser's. Tor Browser asks for English whatever its user reads, so a newsroom whose sources
    # read Russian sets "ru", and their first codename is Russian too.
    source_language: str | None = None
    session_minutes: int = 120
    kdf_opslimit: int = KDF_OPSLIMIT
    kdf_memlimit: int = KDF_MEMLIMIT
    kdf_concurrency: int = 2  # derivations running at once per worker
    kdf_queue: int = 8  # derivations waiting per worker; beyond that the source sees "busy, try again"
    kdf_timeout_seconds: float = 10.0  # a derivation that waited this long is refused as busy
    kdf_per_circuit: int = 1  # derivations running or waiting per worker from one Tor circuit (a source logs in once)
    kdf_circuit_burst: int = 3  # derivations one circuit may start in a row per worker ...
    kdf_circuit_interval_seconds: float = 5.0  # ... and one more every this many seconds
    uploads_per_worker: int = 150  # uploads in flight per worker ($INTAKE_UPLOADS_PER_WORKER)
    uploads_per_circuit: int = 3  # uploads in flight per worker from one Tor circuit ($INTAKE_UPLOADS_PER_CIRCUIT)
    upload_chunk_bytes: int = 4 * 1024 * 1024  # ciphertext per stored chunk row (one short transaction each; see bench/store.py)
    busy_timeout_ms: int = 10_000  # how long a connection waits for the write lock

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def flask_secret_key(self) -> bytes:
        return _derive(self.instance_secret, b"intake:flask", 32)

    @property
    def journalist_flask_secret_key(self) -> bytes:
        """Not the source app's key: a cookie of one app is worthless to the other."""
        return _derive(self.instance_secret, b"intake:jflask", 32)

    @property
    def login_throttle_key(self) -> bytes:
        """Keys the hash under which the journalist login throttle counts a name tried."""
        return _derive(self.instance_secret, b"intake:login-nm", 32)

    @property
    def codename_salt(self) -> bytes:
        """The Argon2id salt of codename derivations (16 bytes): per instance, so
        one precomputed table cannot serve two newsrooms."""
        return _derive(self.instance_secret, b"intake:codename", 16)


def _derive(secret: bytes, purpose: bytes, size: int) -> bytes:
    # BLAKE2b keyed with the instance secret, personalised per purpose (domain separation).
    return hashlib.blake2b(b"", key=secret, person=purpose, digest_size=size).digest()


def db_key_path(data_dir: Path, db_key_file: Path | None = None) -> Path:
    """Where the database key is read from: the explicit file, else $INTAKE_DB_KEY_FILE,
    else a systemd credential, else `db.key` in the data dir."""
    if db_key_file is not None:
        return Path(db_key_file)
    if os.environ.get(DB_KEY_FILE_ENV):
        return Path(os.environ[DB_KEY_FILE_ENV])
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / SYSTEMD_CREDENTIAL).is_file():
        return Path(credentials) / SYSTEMD_CREDENTIAL
    return Path(data_dir) / DEFAULT_DB_KEY_FILE


def key_inside_data_dir(data_dir: Path, db_key_file: Path | None = None) -> Path | None:
    """The database key's path if it lies inside the data dir (where a copy of the disk
    takes it along with the database, which then protects nothing), else None."""
    key_path = db_key_path(data_dir, db_key_file)
    return key_path if key_path.resolve().is_relative_to(Path(data_dir).resolve()) else None


# What read_secret_file reads, named in its errors.
DATABASE_KEY = told("the database key")
INSTANCE_SECRET = told("the instance secret")


def read_secret_file(path: Path, size: int, what: Told, error: type[SecretFileError] = SecretFileError) -> bytes:
    """Read a secret written as hex by `intake init`; refuse it if others may read it."""
    try:
        info = path.stat()
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        if error is MissingDatabaseKeyError:
            raise error(told("{path} ({what}) does not exist: give the key's file with --db-key-file", path=path,
                             what=what)) from None
        raise error(told("{path} ({what}) does not exist", path=path, what=what)) from None
    except (OSError, UnicodeDecodeError):
        raise error(told("{path} ({what}) cannot be read", path=path, what=what)) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(told("{path} ({what}) is readable by other users: run chmod 600 {path}", path=path, what=what))
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != size:
        raise error(told("{path} ({what}) does not hold a {size}-byte key in hex", path=path, what=what, size=size))
    return secret


# Files `intake init` writes only after the database (and `intake serve` after that): finding one
# without intake.db means the instance lost its database (a failed disk, a copy made wrong), not
# that the dir is new or that a first init was cut short. `intake init` there would make an empty
# store at the same addresses.
_WRITTEN_AFTER_THE_DATABASE = ("db-key.recovery", f"{DB_FILE}-slots", "onion")


def check_instance_whole(data_dir: Path) -> None:
    """Raise DamagedInstanceError if ``data_dir`` holds an instance that lost its database or its
    instance secret (an init cut short before its database is not one: init goes on there)."""
    if (data_dir / DB_FILE).is_file():
        missing = [] if (data_dir / INSTANCE_SECRET_FILE).is_file() else [INSTANCE_SECRET_FILE]
    else:
        missing = [DB_FILE] if any((data_dir / name).exists() for name in _WRITTEN_AFTER_THE_DATABASE) else []
    if missing:
        raise DamagedInstanceError(told("{data_dir} holds an intake instance whose {file} is missing: restore it from a "
                                        "backup into a new folder (`intake restore`); `intake init` cannot bring it back",
                                        data_dir=data_dir, file=missing[0]))


def load_settings(data_dir: Path, *, db_key_file: Path | None = None, **overrides) -> Settings:
    """Settings of the instance in `data_dir`; `overrides` replace any default (tests use small KDF costs)."""
    data_dir = Path(data_dir)
    check_instance_whole(data_dir)
    if not (data_dir / DB_FILE).is_file() or not (data_dir / INSTANCE_SECRET_FILE).is_file():
        raise NotInitialisedError(told("{data_dir} is not an intake data dir: check the path (`intake init --data "
                                       "{data_dir}` would make a new, empty instance there)", data_dir=data_dir))
    instance_secret = read_secret_file(data_dir / INSTANCE_SECRET_FILE, INSTANCE_SECRET_BYTES, INSTANCE_SECRET)
    db_key = read_secret_file(db_key_path(data_dir, db_key_file), DB_KEY_BYTES, DATABASE_KEY, MissingDatabaseKeyError)
    settings = Settings(data_dir=data_dir, db_key=db_key, instance_secret=instance_secret)
    return dataclasses.replace(settings, **overrides) if overrides else settings


# Operator limits: environment variable -> (Settings field, bytes per unit).
LIMITS_FROM_ENVIRONMENT = {
    "INTAKE_MAX_UPLOAD_MIB": ("max_request_bytes", 1024 * 1024),
    "INTAKE_UPLOADS_PER_WORKER": ("uploads_per_worker", 1),
    "INTAKE_UPLOADS_PER_CIRCUIT": ("uploads_per_circuit", 1),
}


def operator_settings_from_environment(env: dict[str, str] | None = None) -> dict[str, object]:
    """The limits and the source pages' language an operator set in the environment, as Settings
    fields (a bad value: ValueError)."""
    env = os.environ if env is None else env
    chosen: dict[str, object] = {}
    for name, (field_name, unit) in LIMITS_FROM_ENVIRONMENT.items():
        text = env.get(name, "")
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, not {text!r}")
        chosen[field_name] = int(text) * unit
    language = env.get(SOURCE_LANGUAGE_ENV, "")
    if language:
        if language not in PAGE_LANGUAGES:
            raise ValueError(f"{SOURCE_LANGUAGE_ENV} must be one of {', '.join(PAGE_LANGUAGES)}, not {language!r}")
        chosen["source_language"] = language
    return chosen


def load_settings_from_environment(**overrides) -> Settings:
    """Settings of the instance in $INTAKE_DATA, with the operator's limits, for the app
    factories that gunicorn calls."""
    return load_settings(Path(os.environ[DATA_DIR_ENV]), **{**operator_settings_from_environment(), **overrides})
