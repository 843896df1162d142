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

from keys import bundle
from keys.cleaning import folder as cleaning, sandbox, triage
from keys.errors import KeysError
from keys.identity import KDF_INTERACTIVE, KDF_MODERATE, KDF_SENSITIVE, Identity, PublicIdentity, check_name
from keys.progress import Progress
from keys.source_record import SOURCE_RECORD, load_source_record
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


def cmd_decrypt(args: argparse.Namespace) -> int:
    if args.clean:
        sandbox.find_tools()  # before the passphrase: say now what to install
    with bundle.ExportBundle.open(args.bundle) as export:
        identity = _load_identity(args)
        progress = Progress(export.items_size, enabled=True if args.progress else None)
        try:
            summary = unpack_bundle(export, identity, Path(args.out), progress.advance)
        finally:
            progress.finish()
    if args.clean:
        _clean(Path(args.out))
    triage.write_triage(Path(args.out))
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


def _clean(folder: Path, limits: sandbox.Limits = sandbox.Limits()) -> None:
    done = cleaning.clean_folder(folder, limits=limits)
    print(
        f"{done.cleaned} file(s) cleaned, {done.not_cleaned} not cleaned, {done.already} cleaned before; "
        f"{done.flagged} file(s) with warnings"
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number above 0: {text!r}")
    return int(text)


def cmd_clean(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    _clean(folder, sandbox.Limits(seconds=args.time_limit, memory=args.memory_limit << 20))
    out = folder.parent if (folder / SOURCE_RECORD).is_file() else folder
    triage.write_triage(out)
    print(f"cleaned copies are beside the originals; open {shlex.quote(str(out / 'index.html'))}")
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
    identity = _load_identity(args)
    sealed = bundle.seal_reply(text, base64.b64decode(record["reply_public_key"]))
    count = bundle.add_replies(Path(args.out), identity, [(record["source_id"], sealed)])
    print(f"reply to {record['designation']} sealed; {args.out} now holds {count} signed repl{'y' if count == 1 else 'ies'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    with open(args.bundle, "rb") as f:
        magic = f.read(len(bundle.EXPORT_MAGIC))
    if magic == bundle.REPLY_MAGIC:
        with open(args.bundle, "rb") as f:
            info = bundle.describe_reply_bundle(f)
        print(f"reply bundle, version {bundle.VERSION}")
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
        sources = export.read_manifest(_load_identity(args))
    for source in sources:
        print(f"\n{source.designation}  (source id {source.source_id})")
        for item in source.items:
            print(f"  {item.received_day}  {item.kind:<7}  {item.size:>12,} bytes  sealed to {', '.join(item.recipients)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Offline toolkit for intake journalists: keys, decryption, cleaning, replies.")
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
        "decrypt",
        help="decrypt an export bundle into a folder",
        description="Decrypt an export bundle: a folder per source, and index.html.",
        epilog=(
            f"Exit status: 0 when every item for you was decrypted (or was already there); {EXIT_DAMAGED_ITEMS} when the bundle "
            "is intact but some items were damaged on the server before export: the others were decrypted, and each damaged "
            f"one is named on stderr (source designation and item id); {EXIT_ERROR} on any other error, a damaged bundle "
            "included, which stops at once. Nothing partial is ever left; items decrypted before a stop are kept."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--key", required=True, metavar="SECRET_FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--progress", action="store_true", help="always show the progress bar (default: on a terminal, for large bundles)")
    p.add_argument("--clean", action="store_true", help="then make a cleaned copy of every file, as the clean command does")
    passphrase_option(p)
    p.set_defaults(run=cmd_decrypt)

    p = commands.add_parser(
        "clean",
        help="make a metadata-free copy of every decrypted file, and flag dangerous ones",
        description=(
            "For every file decrypt wrote, check its bytes for danger (programs, macros, scripts, remote references, "
            "hostile archives, misleading names), then make a cleaned copy beside it with mat2, run in a bubblewrap "
            "sandbox without network. Originals are never changed. index.html then shows what was found."
        ),
        epilog=f"Needs the Debian packages mat2 and bubblewrap: {sandbox.INSTALL}",
    )
    p.add_argument("folder", metavar="FOLDER", help="a folder written by decrypt, or one source folder in it")
    p.add_argument("--time-limit", type=_positive, default=sandbox.Limits.seconds, metavar="SECONDS", help="per file and step (default: %(default)s)")
    p.add_argument("--memory-limit", type=_positive, default=sandbox.Limits.memory >> 20, metavar="MIB", help="address space of the cleaner (default: %(default)s)")
    p.set_defaults(run=cmd_clean)

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
