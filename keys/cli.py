"""The ``intake-keys`` command: the journalist's offline toolkit.

Every failure ends as one line on stderr and a non-zero exit status. The one
exception is ``decrypt`` meeting items damaged on the server before export: it
decrypts the rest, then prints one line per damaged item and exits with
EXIT_DAMAGED_ITEMS.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import shlex
import sys
from pathlib import Path

from keys import bundle, reply_bundle
from keys.errors import KeysError
from keys.identity import KDF_INTERACTIVE, KDF_MODERATE, KDF_SENSITIVE, Identity, PublicIdentity, check_name
from keys.progress import Progress
from keys.server_key import ServerPublicKey, require_trusted, trust_server, trusted_servers_dir
from keys.source_record import load_source_record
from keys.unpack import unpack_bundle

PROG = "intake-keys"
MIN_PASSPHRASE = 12
MAX_MESSAGE = 256 << 10
KDF_STRENGTHS = {"interactive": KDF_INTERACTIVE, "moderate": KDF_MODERATE, "sensitive": KDF_SENSITIVE}
EXIT_ERROR = 1
EXIT_DAMAGED_ITEMS = 3  # decrypt: the bundle is intact, but some items were damaged on the server; the rest were decrypted
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class UsageError(KeysError):
    """The command line asks for something impossible."""


def _read_passphrase(args: argparse.Namespace, prompt: str, confirm: bool = False) -> str:
    if args.passphrase_file:
        with open(args.passphrase_file, encoding="utf-8") as f:
            passphrase = f.readline().rstrip("\r\n")
    else:
        try:
            passphrase = getpass.getpass(prompt)
            if confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
                raise UsageError("the passphrases do not match")
        except EOFError:
            raise UsageError("no passphrase given (use --passphrase-file when there is no terminal)") from None
    if not passphrase:
        raise UsageError("the passphrase is empty")
    return passphrase


def _load_identity(args: argparse.Namespace) -> Identity:
    return Identity.load(args.key, _read_passphrase(args, f"Passphrase for {args.key}: "))


def cmd_generate(args: argparse.Namespace) -> int:
    name = check_name(args.name or _user_name())
    out = Path(args.out)
    secret_path, public_path = out / f"{name}.secret", out / f"{name}.public"
    for path in (secret_path, public_path):
        if path.exists():
            raise UsageError(f"{path} exists; refusing to overwrite a key")
    passphrase = _read_passphrase(args, f"New passphrase for {name}: ", confirm=True)
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"the passphrase is too short: use at least {MIN_PASSPHRASE} characters (several random words)")
    identity = Identity.generate(name)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity.save(secret_path, passphrase, KDF_STRENGTHS[args.kdf_strength])
    identity.public.save(public_path)
    print(f"secret key: {secret_path} (keep it on this laptop)")
    print(f"public key: {public_path} (give it to the server admin)")
    print(f"fingerprint: {identity.public.fingerprint}")
    return 0


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise UsageError("cannot tell your user name: give --name") from None


def cmd_fingerprint(args: argparse.Namespace) -> int:
    public = PublicIdentity.load(args.public_file)
    print(f"{public.name}: {public.fingerprint}")
    return 0


def cmd_trust_server(args: argparse.Namespace) -> int:
    key = ServerPublicKey.load(args.server_key_file)
    print(f"server key fingerprint: {key.fingerprint}")
    if args.fingerprint is not None:
        if " ".join(args.fingerprint.upper().split()) != key.fingerprint:
            raise UsageError("the fingerprint you gave does not match this server key file: it was NOT trusted")
    else:
        try:
            answer = input("Is this the fingerprint your admin read out from `intake journalist add`? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError("not confirmed: the server key was NOT trusted")
    path, new = trust_server(args.key, key)
    print(f"{'trusted' if new else 'already trusted'}: {path}")
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    with bundle.ExportBundle.open(args.bundle) as export:
        trusted = require_trusted(args.key)
        progress = Progress(export.size + export.items_size, enabled=True if args.progress else None)
        try:
            # The whole bundle is checked against the server's signature before the passphrase is asked.
            export.verify(trusted, progress.advance)
            identity = _load_identity(args)
            summary = unpack_bundle(export, identity, Path(args.out), Path(args.key), progress.advance)
        finally:
            progress.finish()
    print(f"{summary.written} item(s) decrypted from {summary.sources} source(s) into {args.out}; open {shlex.quote(str(Path(args.out) / 'index.html'))}")
    if summary.already_there:
        print(f"{summary.already_there} item(s) were already decrypted there and were skipped")
    if summary.not_for_you:
        print(f"{summary.not_for_you} item(s) are not sealed to {identity.name} and were skipped")
    if summary.damaged:
        print(f"{len(summary.damaged)} item(s) were damaged on the server before export and were not decrypted (listed on stderr)")
        sys.stdout.flush()
        for item in summary.damaged:
            # Designation, item id, kind and day are checked against strict patterns by the manifest
            # reader; the reason is the envelope's fixed refusal. No plaintext.
            _fail(
                f"source {item.designation!r}: item {item.item_id} ({item.kind} received {item.received_day}) was damaged "
                f"on the server before export and was not decrypted (the bundle itself is intact): {item.reason}"
            )
        return EXIT_DAMAGED_ITEMS
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    record = load_source_record(Path(args.source))
    assert record is not None
    if args.message_file:
        with open(args.message_file, "rb") as f:
            raw = f.read(MAX_MESSAGE + 1)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{args.message_file} is not UTF-8 text") from None
    else:
        text = args.message
    if not text.strip():
        raise UsageError("the reply is empty")
    if len(text.encode("utf-8")) > MAX_MESSAGE:
        raise UsageError(f"the reply is longer than {MAX_MESSAGE // 1024} KiB")
    server = _reply_server(args.key, record)
    identity = _load_identity(args)
    sealed = reply_bundle.SealedReply(
        reply_bundle.seal_routing(record["source_id"], server.encryption_key),
        reply_bundle.seal_reply(text, base64.b64decode(record["reply_public_key"])),
    )
    count = reply_bundle.add_replies(Path(args.out), identity, [sealed])
    print(f"reply to {record['designation']} sealed; {args.out} now holds {count} signed repl{'y' if count == 1 else 'ies'}")
    return 0


def _reply_server(key_file: str, record: dict) -> ServerPublicKey:
    """The trusted server the source came from (its key named in source.json); with none named, the only trusted one."""
    trusted = require_trusted(key_file).values()
    named = record.get("server_key")
    matching = [server for server in trusted if server.fingerprint == named] if named else list(trusted)
    if len(matching) != 1:
        where = trusted_servers_dir(key_file)
        if named:
            raise UsageError(f"the source came from server key {named}, which is no longer trusted in {where}")
        raise UsageError(f"several server keys are trusted in {where}: decrypt the source's latest bundle again to record which one it came from")
    return matching[0]


def cmd_inspect(args: argparse.Namespace) -> int:
    with open(args.bundle, "rb") as f:
        magic = f.read(len(bundle.EXPORT_MAGIC))
    if magic == reply_bundle.REPLY_MAGIC:
        with open(args.bundle, "rb") as f:
            info = reply_bundle.describe_reply_bundle(f)
        print(f"reply bundle, version {reply_bundle.VERSION}")
        print(f"signer: {info.signer} ({'signature present, checked by the server on import' if info.signed else 'NOT SIGNED'})")
        print(f"replies: {info.replies}")
        return 0
    with bundle.ExportBundle.open(args.bundle) as export:
        assert export.manifest_entry is not None
        print(f"export bundle, version {export.version}, {export.size:,} bytes")
        print(f"items: {len(export.items)}, {export.items_size:,} bytes of envelopes")
        print(f"manifest: {export.manifest_entry.length:,} bytes, sealed")
        if not args.key:
            return 0
        server = export.verify(require_trusted(args.key))
        print(f"signed by the trusted server key {server.fingerprint}")
        sources = export.read_manifest(_load_identity(args))
    for source in sources:
        print(f"\n{source.designation}  (source id {source.source_id})")
        for item in source.items:
            print(f"  {item.received_day}  {item.kind:<7}  {item.size:>12,} bytes  sealed to {', '.join(item.recipients)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Offline toolkit for intake journalists: keys, decryption, replies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def passphrase_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passphrase-file", metavar="FILE", help="read the passphrase from the first line of FILE instead of prompting")

    p = commands.add_parser("generate", help="create a key pair: NAME.secret and NAME.public", description="Create a journalist key pair.")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.secret (mode 0600) and NAME.public")
    p.add_argument("--name", help="your name as the server knows it (default: your user name)")
    p.add_argument("--kdf-strength", choices=sorted(KDF_STRENGTHS), default="moderate", help="Argon2id cost of the passphrase (default: moderate, 256 MiB)")
    passphrase_option(p)
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("fingerprint", help="show a public key's fingerprint", description="Show the fingerprint of a public key file, to read aloud.")
    p.add_argument("public_file", metavar="PUBLIC_FILE")
    p.set_defaults(run=cmd_fingerprint)

    p = commands.add_parser(
        "trust-server",
        help="trust the server's key, checked by its fingerprint",
        description=(
            "Trust an intake server's public key (the file server-signing.public your admin gives you), after checking "
            "its fingerprint against the one the admin reads out. It is kept in trusted-servers/ beside your secret key "
            "file; decrypt accepts only bundles signed by a key kept there. After a key rotation, trust the new key too; "
            "delete the old file from trusted-servers/ once no bundle signed with it is left."
        ),
    )
    p.add_argument("server_key_file", metavar="SERVER_KEY_FILE")
    p.add_argument("--key", required=True, metavar="SECRET_FILE", help="your secret key file: the trust store is beside it")
    p.add_argument("--fingerprint", metavar="FINGERPRINT", help="the fingerprint the admin read out (otherwise you are asked to confirm)")
    p.set_defaults(run=cmd_trust_server)

    p = commands.add_parser(
        "decrypt",
        help="decrypt an export bundle into a folder",
        description="Decrypt an export bundle: a folder per source, and index.html.",
        epilog=(
            f"Exit status: 0 when every item for you was decrypted (or was already there); {EXIT_DAMAGED_ITEMS} when the bundle "
            "is intact but some items were damaged on the server before export: the others were decrypted, and each damaged "
            f"one is named on stderr (source designation and item id); {EXIT_ERROR} on any other error, a damaged bundle "
            "included, which stops at once. A bundle not signed by a server key you trust (trust-server), one that "
            "changes a source you decrypted before, or one holding a forged record is refused before anything is "
            "written. Nothing partial is ever left; items decrypted before a stop are kept."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--key", required=True, metavar="SECRET_FILE", help="your secret key file; the trusted server keys and pinned sources are beside it")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--progress", action="store_true", help="always show the progress bar (default: on a terminal, for large bundles)")
    passphrase_option(p)
    p.set_defaults(run=cmd_decrypt)

    p = commands.add_parser("reply", help="seal a reply to a source into a signed reply bundle", description="Seal a reply to a source and add it to a signed reply bundle.")
    p.add_argument("--key", required=True, metavar="SECRET_FILE")
    p.add_argument("--source", required=True, metavar="DIR/DESIGNATION", help="the source's folder written by decrypt")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--message", metavar="TEXT")
    text.add_argument("--message-file", metavar="FILE")
    p.add_argument("--out", required=True, metavar="REPLY_BUNDLE", help="created, or extended and re-signed if it exists")
    passphrase_option(p)
    p.set_defaults(run=cmd_reply)

    p = commands.add_parser("inspect", help="describe a bundle without writing plaintext", description="Describe an export or reply bundle; with --key, list the export manifest.")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--key", metavar="SECRET_FILE", help="decrypt the manifest to list sources and items")
    passphrase_option(p)
    p.set_defaults(run=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeysError as error:
        _fail(str(error))
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        _fail(f"{where}{error.strerror or error}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail("interrupted; nothing partial was kept")
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: still one line, and no data in it
        _fail(f"internal error ({type(error).__name__}); please report it")
        return EXIT_INTERNAL


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
