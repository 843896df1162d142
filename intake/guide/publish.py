"""What `intake publish` writes for the newsroom's public website.

- ``tip-line.en.html``, ``tip-line.ru.html``: the guide, one static page per
  language (no scripts, no external resources), for a source who cannot reach
  the onion yet;
- ``tip-line.en.txt``, ``tip-line.ru.txt``: the same as plain text, for Telegram
  channels and e-mail;
- ``onion-address.txt``: a short statement of the source onion address and the
  journalists' key fingerprints, with ``onion-address.txt.sig``, its raw 64-byte
  Ed25519 signature by the server's signing key, and ``server-signing-key.pem``,
  that key's public half. Anyone checks the statement with one OpenSSL 3 command
  (VERIFY_COMMAND); the same fingerprints and key are on the onion's /guide page.

Nothing here is secret: the signing seed stays in the data dir.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from keys.files import PendingFile
from nacl.signing import SigningKey, VerifyKey

from intake.guide import LANGUAGES, BridgeAdvice, build_guide
from intake.retention import RetentionPolicy

STATEMENT = "onion-address.txt"
SIGNATURE = STATEMENT + ".sig"
PUBLIC_KEY = "server-signing-key.pem"
VERIFY_COMMAND = f"openssl pkeyutl -verify -pubin -inkey {PUBLIC_KEY} -rawin -in {STATEMENT} -sigfile {SIGNATURE}"
# SubjectPublicKeyInfo for Ed25519 (RFC 8410) is this fixed prefix, then the 32-byte key.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "guide"


@dataclass(frozen=True)
class Facts:
    """What the published pages state about this instance."""

    onion: str  # the source onion address, "xxx.onion"
    journalists: tuple[tuple[str, str], ...]  # (name, key fingerprint) of each active journalist
    server_key: str  # the one base64 line of server-signing-key.pem
    day: datetime.date


def public_key_line(verify_key: VerifyKey) -> str:
    """The base64 body of the PEM public key: one line a person can compare across channels."""
    return base64.b64encode(_ED25519_SPKI_PREFIX + bytes(verify_key)).decode("ascii")


def public_key_pem(verify_key: VerifyKey) -> str:
    return f"-----BEGIN PUBLIC KEY-----\n{public_key_line(verify_key)}\n-----END PUBLIC KEY-----\n"


def statement(facts: Facts) -> str:
    """The signed text, in both languages, ASCII layout so it survives copying."""
    lines = [
        "Our secure tip line / Наш защищённый канал для источников",
        f"Statement of / Заявление от {facts.day.isoformat()}",
        "",
        "Onion address (open it in Tor Browser) / Onion-адрес (открывать в Tor Browser):",
        f"http://{facts.onion}/",
        "",
        "Journalists' key fingerprints / Отпечатки ключей журналистов:",
        *(f"{name}: {fingerprint}" for name, fingerprint in facts.journalists),
        "",
        f"Server signing key / Ключ подписи сервера ({PUBLIC_KEY}):",
        facts.server_key,
    ]
    return "\n".join(lines) + "\n"


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def page_name(language: str, suffix: str) -> str:
    return f"tip-line.{language}.{suffix}"


def publish(out_dir: Path, facts: Facts, signing_key: SigningKey, retention: RetentionPolicy,
            bridges: BridgeAdvice) -> list[Path]:
    """Write every file into ``out_dir`` (made if missing), each replaced whole; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    signed = statement(facts).encode("utf-8")
    files: dict[str, bytes] = {
        STATEMENT: signed,
        SIGNATURE: signing_key.sign(signed).signature,
        PUBLIC_KEY: public_key_pem(signing_key.verify_key).encode("ascii"),
    }
    environment = _environment()
    for language in LANGUAGES:
        guide = build_guide(language, retention, bridges)
        context = {
            "guide": guide, "facts": facts, "statement": signed.decode("utf-8"), "verify_command": VERIFY_COMMAND,
            "files": (STATEMENT, SIGNATURE, PUBLIC_KEY),
            "other": {code: page_name(code, "html") for code in LANGUAGES if code != language},
        }
        for suffix in ("html", "txt"):
            files[page_name(language, suffix)] = environment.get_template(f"page.{suffix}").render(context).encode("utf-8")
    written = []
    for name, data in files.items():
        with PendingFile(out_dir, 0o644) as pending:
            pending.write(data)
            written.append(pending.commit_replacing(name, durable=True))
    return written
