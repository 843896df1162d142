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

from keys import bundle, bundle_reader, recover_cli, reply_bundle
from keys.cleaning import folder as cleaning, sandbox, triage, wording
from keys.errors import KeysError
from keys.i18n import LANGUAGES, YES, _, ngettext, set_language, speak_for_argparse
from keys.identity import KDF_INTERACTIVE, KDF_MODERATE, KDF_SENSITIVE, Identity, PublicIdentity, check_name, check_secret_key_file
from keys.os_errors import os_error_words
from keys.progress import Progress
from keys.server_key import ServerPublicKey, require_trusted, trust_server, trusted_servers_dir
from keys.source_record import SOURCE_RECORD, load_source_record
from keys.told import in_language
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
        # The bytes before the first LF or CR (so a line ends at LF, CR LF or a lone CR), as UTF-8 (SECURITY.md section 4).
        with open(args.passphrase_file, "rb") as f:
            first_line = f.readline().rstrip(b"\n").split(b"\r")[0]
        try:
            passphrase = first_line.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(_("{file} is not UTF-8 text").format(file=args.passphrase_file)) from None
    else:
        try:
            passphrase = getpass.getpass(prompt)
            if confirm and getpass.getpass(_("Repeat the passphrase: ")) != passphrase:
                raise UsageError(_("the passphrases do not match"))
        except EOFError:
            raise UsageError(_("no passphrase given (use --passphrase-file when there is no terminal)")) from None
    if not passphrase:
        raise UsageError(_("the passphrase is empty"))
    return passphrase


def _load_identity(args: argparse.Namespace) -> Identity:
    return Identity.load(args.key, _read_passphrase(args, _("Passphrase for {key}: ").format(key=args.key)))


def cmd_generate(args: argparse.Namespace) -> int:
    name = check_name(args.name or _user_name())
    out = Path(args.out)
    secret_path, public_path = out / f"{name}.secret", out / f"{name}.public"
    for path in (secret_path, public_path):
        if path.exists():
            raise UsageError(_("{path} exists; refusing to overwrite a key").format(path=path))
    passphrase = _read_passphrase(args, _("New passphrase for {name}: ").format(name=name), confirm=True)
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(_("the passphrase is too short: use at least {count} characters (several random words)")
                         .format(count=MIN_PASSPHRASE))
    identity = Identity.generate(name)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity.save(secret_path, passphrase, KDF_STRENGTHS[args.kdf_strength])
    try:
        identity.public.save(public_path)
    except BaseException:  # both files or neither: a lone secret would block the next try
        secret_path.unlink()
        raise
    print(_("secret key: {path} (keep it on this laptop)").format(path=secret_path))
    print(_("public key: {path} (give it to the server admin)").format(path=public_path))
    print(_("fingerprint: {fingerprint}").format(fingerprint=identity.public.fingerprint))
    return 0


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise UsageError(_("cannot tell your user name: give --name")) from None


def cmd_fingerprint(args: argparse.Namespace) -> int:
    public = PublicIdentity.load(args.public_file)
    print(f"{public.name}: {public.fingerprint}")
    return 0


def cmd_trust_server(args: argparse.Namespace) -> int:
    check_secret_key_file(args.key)  # before the questions: the trust goes beside it
    key = ServerPublicKey.load(args.server_key_file)
    print(_("server key fingerprint: {fingerprint}").format(fingerprint=key.fingerprint))
    if args.fingerprint is not None:
        if "".join(args.fingerprint.upper().split()) != key.fingerprint.replace(" ", ""):  # spaced or not
            raise UsageError(_("the fingerprint you gave does not match this server key file: it was NOT trusted"))
    else:
        try:
            answer = input(_("Is this the fingerprint your admin read out from `intake journalist add`? [y/N] "))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in YES:
            raise UsageError(_("not confirmed: the server key was NOT trusted"))
    path, new = trust_server(args.key, key)
    print((_("trusted: {path}") if new else _("already trusted: {path}")).format(path=path))
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    if args.clean:
        sandbox.find_tools()  # before the passphrase: say now what to install
    with bundle_reader.ExportBundle.open(args.bundle) as export:
        trusted = require_trusted(args.key)
        progress = Progress(export.size + export.items_size, enabled=True if args.progress else None)
        try:
            # The whole bundle is checked against the server's signature before the passphrase is asked.
            export.verify(trusted, progress.advance)
            identity = _load_identity(args)
            summary = unpack_bundle(export, identity, Path(args.out), Path(args.key), progress.advance)
        finally:
            progress.finish()
    if args.clean:
        _clean(Path(args.out))
    triage.write_triage(Path(args.out))
    print(_("{items} item(s) decrypted from {sources} source(s) into {out}; open {index}").format(
        items=summary.written, sources=summary.sources, out=args.out, index=shlex.quote(str(Path(args.out) / "index.html"))))
    if summary.already_there:
        print(_("{count} item(s) were already decrypted there and were skipped").format(count=summary.already_there))
    if summary.not_for_you:
        print(_("{count} item(s) are not sealed to {name} and were skipped").format(count=summary.not_for_you, name=identity.name))
    if summary.damaged:
        print(_("{count} item(s) were damaged on the server before export and were not decrypted (listed on stderr)")
              .format(count=len(summary.damaged)))
        sys.stdout.flush()
        for item in summary.damaged:
            # Designation, item id, kind and day are checked against strict patterns by the manifest
            # reader; the reason is the envelope's fixed refusal. No plaintext.
            _fail(
                _("source {designation}: item {item} ({kind} received {day}) was damaged on the server before export "
                  "and was not decrypted (the bundle itself is intact): {reason}").format(
                    designation=repr(item.designation), item=item.item_id, kind=item.kind, day=item.received_day,
                    reason=in_language(item.reason, _))
            )
        return EXIT_DAMAGED_ITEMS
    return 0


def _clean(folder: Path, limits: sandbox.Limits = sandbox.Limits()) -> None:
    done = cleaning.clean_folder(folder, limits=limits)
    print(wording.text("clean-summary").format(cleaned=done.cleaned, not_cleaned=done.not_cleaned, already=done.already,
                                               flagged=done.flagged))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(_("not a whole number above 0: {text}").format(text=repr(text)))
    return int(text)


def cmd_clean(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    _clean(folder, sandbox.Limits(seconds=args.time_limit, memory=args.memory_limit << 20))
    out = folder.parent if (folder / SOURCE_RECORD).is_file() else folder
    triage.write_triage(out)
    print(wording.text("clean-done").format(index=shlex.quote(str(out / "index.html"))))
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
            raise UsageError(_("{file} is not UTF-8 text").format(file=args.message_file)) from None
    else:
        text = args.message
    if not text.strip():
        raise UsageError(_("the reply is empty"))
    if len(text.encode("utf-8")) > MAX_MESSAGE:
        raise UsageError(_("the reply is longer than {size} KiB").format(size=MAX_MESSAGE // 1024))
    server = _reply_server(args.key, record)
    identity = _load_identity(args)
    sealed = reply_bundle.SealedReply(
        reply_bundle.seal_routing(record["source_id"], server.encryption_key),
        reply_bundle.seal_reply(text, base64.b64decode(record["reply_public_key"])),
    )
    count = reply_bundle.add_replies(Path(args.out), identity, [sealed])
    print(ngettext("reply to {designation} sealed; {out} now holds {count} signed reply",
                   "reply to {designation} sealed; {out} now holds {count} signed replies", count)
          .format(designation=record["designation"], out=args.out, count=count))
    return 0


def _reply_server(key_file: str, record: dict) -> ServerPublicKey:
    """The trusted server the source came from (its key named in source.json); with none named, the only trusted one."""
    trusted = require_trusted(key_file).values()
    named = record.get("server_key")
    matching = [server for server in trusted if server.fingerprint == named] if named else list(trusted)
    if len(matching) != 1:
        where = trusted_servers_dir(key_file)
        if named:
            raise UsageError(_("the source came from server key {fingerprint}, which is not among the trusted keys in "
                               "{folder} (trust it with `intake-keys trust-server` if your admin gave it to you)")
                             .format(fingerprint=named, folder=where))
        raise UsageError(_("several server keys are trusted in {folder}: decrypt the source's latest bundle again to record "
                           "which one it came from").format(folder=where))
    return matching[0]


def cmd_inspect(args: argparse.Namespace) -> int:
    with open(args.bundle, "rb") as f:
        magic = f.read(len(bundle.EXPORT_MAGIC))
    if magic == reply_bundle.REPLY_MAGIC:
        with open(args.bundle, "rb") as f:
            info = reply_bundle.describe_reply_bundle(f)
        print(_("reply bundle, version {version}").format(version=reply_bundle.VERSION))
        signature = _("signature present, checked by the server on import") if info.signed else _("NOT SIGNED")
        print(_("signer: {signer} ({signature})").format(signer=info.signer, signature=signature))
        print(_("replies: {count}").format(count=info.replies))
        return 0
    with bundle_reader.ExportBundle.open(args.bundle) as export:
        assert export.manifest_entry is not None
        print(_("export bundle, version {version}, {size}").format(version=export.version, size=wording.byte_count(export.size)))
        print(_("items: {count}, envelopes: {size}").format(count=len(export.items), size=wording.byte_count(export.items_size)))
        print(_("manifest: {size}, sealed").format(size=wording.byte_count(export.manifest_entry.length)))
        if not args.key:
            return 0
        server = export.verify(require_trusted(args.key))
        print(_("signed by the trusted server key {fingerprint}").format(fingerprint=server.fingerprint))
        sources = export.read_manifest(_load_identity(args))
    for source in sources:
        print("\n" + _("{designation}  (source id {id})").format(designation=source.designation, id=source.source_id))
        for item in source.items:
            kind = _("message") if item.kind == "message" else _("file")
            print("  " + _("{day}  {kind:<9}  {size:>16}  sealed to {recipients}").format(
                day=item.received_day, kind=kind, size=wording.byte_count(item.size), recipients=", ".join(item.recipients)))
    return 0


class _VersionAction(argparse.Action):
    """--version: the installed release, looked up only when asked (importlib.metadata loads the
    email package, which the toolkit otherwise never needs)."""

    def __init__(self, option_strings: list[str], dest: str) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS, help=_("show the version and exit"))

    def __call__(self, parser: argparse.ArgumentParser, *_args) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("intake-keys")  # the laptop's install: keys/ alone (scripts/laptop-bundle)
        except PackageNotFoundError:
            release = version("intake")  # beside the server
        print(f"{PROG} {release}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # --lang is accepted before or after the command; main() reads it before building the (translated) help.
    language = argparse.ArgumentParser(add_help=False)
    language.add_argument("--lang", choices=LANGUAGES, default=argparse.SUPPRESS,
                          help=_("language of the messages and of index.html (default: from LANGUAGE, LC_ALL, LC_MESSAGES or LANG)"))
    parser = argparse.ArgumentParser(prog=PROG, parents=[language],
                                     description=_("Offline toolkit for intake journalists: keys, decryption, cleaning, replies."))
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar=_("COMMAND"))

    def command(name: str, help: str, description: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[language], help=help, description=description, **kwargs)

    def passphrase_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passphrase-file", metavar=_("FILE"), help=_("read the passphrase from the first line of FILE instead of prompting"))

    p = command("generate", _("create a key pair: NAME.secret and NAME.public"), _("Create a journalist key pair."))
    p.add_argument("--out", required=True, metavar=_("DIR"), help=_("folder for NAME.secret (mode 0600) and NAME.public"))
    p.add_argument("--name", metavar=_("NAME"), help=_("your name as the server knows it (default: your user name)"))
    p.add_argument("--kdf-strength", choices=sorted(KDF_STRENGTHS), default="moderate", help=_("Argon2id cost of the passphrase (default: moderate, 256 MiB)"))
    passphrase_option(p)
    p.set_defaults(run=cmd_generate)

    p = command("fingerprint", _("show a public key's fingerprint"), _("Show the fingerprint of a public key file, to read aloud."))
    p.add_argument("public_file", metavar=_("PUBLIC_FILE"))
    p.set_defaults(run=cmd_fingerprint)

    p = command(
        "trust-server",
        _("trust the server's key, checked by its fingerprint"),
        _("Trust an intake server's public key (the file server-signing.public your admin gives you), after checking "
          "its fingerprint against the one the admin reads out. It is kept in trusted-servers/ beside your secret key "
          "file; decrypt accepts only bundles signed by a key kept there. After a key rotation, trust the new key too; "
          "delete the old file from trusted-servers/ once no bundle signed with it is left."),
    )
    p.add_argument("server_key_file", metavar=_("SERVER_KEY_FILE"))
    p.add_argument("--key", required=True, metavar=_("SECRET_FILE"), help=_("your secret key file: the trust store is beside it"))
    p.add_argument("--fingerprint", metavar=_("FINGERPRINT"), help=_("the fingerprint the admin read out (otherwise you are asked to confirm)"))
    p.set_defaults(run=cmd_trust_server)

    p = command(
        "decrypt",
        _("decrypt an export bundle into a folder"),
        _("Decrypt an export bundle: a folder per source, and index.html."),
        epilog=_(
            "Exit status: 0 when every item for you was decrypted (or was already there); {damaged} when the bundle "
            "is intact but some items were damaged on the server before export: the others were decrypted, and each damaged "
            "one is named on stderr (source designation and item id); {error} on any other error, a damaged bundle "
            "included, which stops at once. A bundle not signed by a server key you trust (trust-server), one that "
            "changes a source you decrypted before, or one holding a forged record is refused before anything is "
            "written. Nothing partial is ever left; items decrypted before a stop are kept."
        ).format(damaged=EXIT_DAMAGED_ITEMS, error=EXIT_ERROR),
    )
    p.add_argument("bundle", metavar=_("BUNDLE"), help=_("the export file downloaded from the journalist interface or written by intake export"))
    p.add_argument("--key", required=True, metavar=_("SECRET_FILE"), help=_("your secret key file; the trusted server keys and pinned sources are beside it"))
    p.add_argument("--out", required=True, metavar=_("DIR"), help=_("folder for the decrypted submissions, one folder per source, and index.html; decrypting into it again adds only what is new"))
    p.add_argument("--progress", action="store_true", help=_("always show the progress bar (default: on a terminal, for large bundles)"))
    p.add_argument("--clean", action="store_true", help=_("then make a cleaned copy of every file, as the clean command does"))
    passphrase_option(p)
    p.set_defaults(run=cmd_decrypt)

    p = command(
        "clean",
        _("make a metadata-free copy of every decrypted file, and flag dangerous ones"),
        _("For every file decrypt wrote, check its bytes for danger (programs, macros, scripts, remote references, "
          "hostile archives, misleading names), then make a cleaned copy beside it with mat2, run in a bubblewrap "
          "sandbox without network. Originals are never changed. index.html then shows what was found."),
        epilog=_("Needs the Debian packages mat2 and bubblewrap: {install}").format(install=sandbox.INSTALL),
    )
    p.add_argument("folder", metavar=_("FOLDER"), help=_("a folder written by decrypt, or one source folder in it"))
    p.add_argument("--time-limit", type=_positive, default=sandbox.Limits.seconds, metavar=_("SECONDS"), help=_("per file and step, one more for every 8 MiB of the file (default: %(default)s)"))
    p.add_argument("--memory-limit", type=_positive, default=sandbox.Limits.memory >> 20, metavar=_("MIB"), help=_("address space of the cleaner (default: %(default)s)"))
    p.set_defaults(run=cmd_clean)

    p = command("reply", _("seal a reply to a source into a signed reply bundle"), _("Seal a reply to a source and add it to a signed reply bundle."))
    p.add_argument("--key", required=True, metavar=_("SECRET_FILE"), help=_("your secret key file: the reply bundle is signed with it"))
    p.add_argument("--source", required=True, metavar=_("DIR/DESIGNATION"), help=_("the source's folder written by decrypt"))
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--message", metavar=_("TEXT"))
    text.add_argument("--message-file", metavar=_("FILE"))
    p.add_argument("--out", required=True, metavar=_("REPLY_BUNDLE"), help=_("created, or extended and re-signed if it exists"))
    passphrase_option(p)
    p.set_defaults(run=cmd_reply)

    p = command("inspect", _("describe a bundle without writing plaintext"), _("Describe an export or reply bundle; with --key, list the export manifest."))
    p.add_argument("bundle", metavar=_("BUNDLE"))
    p.add_argument("--key", metavar=_("SECRET_FILE"), help=_("decrypt the manifest to list sources and items"))
    passphrase_option(p)
    p.set_defaults(run=cmd_inspect)

    recover_cli.add_parser(command, passphrase_option, _read_passphrase)
    return parser


def _language_asked(argv: list[str]) -> str | None:
    """The value of --lang anywhere on the command line (argparse checks it properly afterwards)."""
    for position, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--lang" and position + 1 < len(argv):
            return argv[position + 1]
        if arg.startswith("--lang="):
            return arg.partition("=")[2]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    asked = _language_asked(argv)
    set_language(asked if asked in LANGUAGES else None)
    speak_for_argparse(asked)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeysError as error:
        _fail(_said(error))
        return EXIT_ERROR
    except OSError as error:
        _fail(in_language(os_error_words(error), _))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail(_("interrupted; nothing partial was kept"))
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: still one line, and no data in it
        _fail(_("internal error ({kind}); please report it").format(kind=type(error).__name__))
        return EXIT_INTERNAL


def _said(error: KeysError) -> str:
    """A refusal in the chosen language (keys/' modules raise told words: keys.told)."""
    return in_language(error, _)


def _fail(message: str) -> None:
    print(_("{prog}: error: {message}").format(prog=PROG, message=message), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
