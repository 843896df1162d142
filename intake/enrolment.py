"""Enrolling a journalist: register their public key and hand out login secrets.

What ``intake journalist add`` and ``reset-login`` print is made here: a login
passphrase, a TOTP secret (as a provisioning URI), and a Tor client
authorisation key pair for the journalist onion service, of which the server
keeps only the public half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keys.identity import PublicIdentity

from intake.journalist_auth import (
    PASSPHRASE_MEMLIMIT,
    PASSPHRASE_OPSLIMIT,
    generate_login_passphrase,
    hash_passphrase,
    new_totp_secret,
    totp_provisioning_uri,
)
from intake.setup import load_journalist_key
from intake.store import Store, StoreError
from intake.store.newsroom import Newsroom
from intake.onion_keys import client_auth_line, generate_client_auth_keypair, load_or_create_onion_key, onion_address_for_key
from intake.told import told


class EnrolmentError(StoreError):
    """The journalist cannot be enrolled as asked (unreadable key, name mismatch)."""


@dataclass(frozen=True, repr=False)
class Enrolment:
    """Secrets to give the journalist once, in person; the server keeps none of them
    in readable form (a hash of the passphrase, the TOTP secret, a public key)."""

    name: str
    fingerprint: str | None
    passphrase: str = field(repr=False)
    totp_uri: str = field(repr=False)
    journalist_onion: str
    client_auth_line: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Enrolment(name={self.name!r})"


def journalist_onion_address(data_dir: Path) -> str:
    """The journalist onion's address; its key is made on first use (as intake.tor does)."""
    return onion_address_for_key(load_or_create_onion_key(Path(data_dir) / "onion" / "journalist.key"))


def load_public_key(path: Path, name: str) -> PublicIdentity:
    """The public key file of the journalist to be enrolled as ``name`` (read as
    `intake init` reads keys: intake.setup.load_journalist_key)."""
    identity = load_journalist_key(path)
    if identity.name != name:
        # Reply bundles are signed under the identity's own name: the account must carry it.
        raise EnrolmentError(told("{path} is the key of {owner!r}, not {name!r}: use --name {owner}", path=path, owner=identity.name, name=name))
    return identity


def _login_secrets(data_dir: Path, name: str, opslimit: int, memlimit: int) -> tuple[dict, Enrolment]:
    passphrase = generate_login_passphrase()
    totp_secret = new_totp_secret()
    client_public, client_private = generate_client_auth_keypair()
    onion = journalist_onion_address(data_dir)
    stored = {
        "login_hash": hash_passphrase(passphrase, opslimit=opslimit, memlimit=memlimit),
        "totp_secret": totp_secret,
        "client_auth_key": client_public,
    }
    shown = Enrolment(name, None, passphrase, totp_provisioning_uri(totp_secret, name), onion,
                      client_auth_line(onion, client_private))
    return stored, shown


def enrol_journalist(store: Store, data_dir: Path, identity: PublicIdentity, *, replacing: bool = False,
                     even_if_unexported: bool = False,
                     opslimit: int = PASSPHRASE_OPSLIMIT, memlimit: int = PASSPHRASE_MEMLIMIT) -> Enrolment:
    """Register ``identity`` with a new login; ``replacing``: in place of the active journalist of that
    name, whose key is retired (key rotation; Newsroom.add_journalist)."""
    stored, shown = _login_secrets(data_dir, identity.name, opslimit, memlimit)
    Newsroom(store).add_journalist(identity.name, bytes(identity.encryption_key), bytes(identity.verify_key),
                                   identity.fingerprint, replacing=replacing, even_if_unexported=even_if_unexported, **stored)
    return Enrolment(shown.name, identity.fingerprint, shown.passphrase, shown.totp_uri,
                     shown.journalist_onion, shown.client_auth_line)


def reset_login(store: Store, data_dir: Path, name: str, *,
                opslimit: int = PASSPHRASE_OPSLIMIT, memlimit: int = PASSPHRASE_MEMLIMIT) -> Enrolment:
    """New passphrase, TOTP secret and client-auth key; the old ones stop working and sessions end."""
    stored, shown = _login_secrets(data_dir, name, opslimit, memlimit)
    Newsroom(store).set_login(name, **stored)
    return shown
