"""The soak's instance and the journalists' laptop, made with the shipped commands as an admin and a
journalist type them: `intake-keys generate`, `intake init`, `intake journalist reset-login`,
`intake-keys trust-server`. Every later command goes through `Newsroom.intake` / `Newsroom.keys`."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
JOURNALISTS = ("alice", "bob")
COMMAND_SECONDS = 600  # the final export and decrypt of a long run take minutes


class CommandFailed(RuntimeError):
    """A command of the product exited with an unexpected status."""


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Newsroom:
    work: Path
    data: Path
    db_key: Path
    laptop: Path
    passphrase_file: Path
    login_passphrase: str = ""
    totp_uri: str = ""

    def secret_key(self, name: str = "alice") -> Path:
        return self.laptop / f"{name}.secret"

    def run(self, program: str, *args: object, ok: tuple[int, ...] = (0,)) -> Result:
        done = subprocess.run([str(BIN / program), *map(str, args)], cwd=self.work, capture_output=True, text=True,
                              timeout=COMMAND_SECONDS, stdin=subprocess.DEVNULL)
        if done.returncode not in ok:
            # The products' errors are one line and carry no plaintext: safe to show.
            raise CommandFailed(f"{program} {args[0]} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        return Result(done.returncode, done.stdout, done.stderr)

    def intake(self, command: str, *args: object, ok: tuple[int, ...] = (0,)) -> Result:
        """`command` may be two words ("journalist reset-login"); the data dir and key options follow it."""
        return self.run("intake", *command.split(), "--data", self.data, "--db-key-file", self.db_key, *args, ok=ok)

    def keys(self, command: str, *args: object, ok: tuple[int, ...] = (0,)) -> Result:
        return self.run("intake-keys", command, *args, ok=ok)


def make_newsroom(work: Path) -> Newsroom:
    """Two journalists' keys on the laptop, a data dir with its key outside it, a web login for alice,
    and the server's signing key trusted on the laptop with the fingerprint the admin read out."""
    laptop = work / "laptop"
    passphrase_file = work / "laptop-passphrase"
    passphrase_file.write_text("soak laptop passphrase of the newsroom\n")
    passphrase_file.chmod(0o600)
    room = Newsroom(work, work / "data", work / "db.key", laptop, passphrase_file)
    for name in JOURNALISTS:
        room.keys("generate", "--out", laptop, "--name", name, "--kdf-strength", "interactive",
                  "--passphrase-file", passphrase_file)
    room.run("intake", "init", "--yes", "--data", room.data, "--db-key-file", room.db_key,
             *[arg for name in JOURNALISTS for arg in ("--journalist-key", laptop / f"{name}.public")])
    enrolment = room.intake("journalist reset-login", "--name", "alice").out
    room.login_passphrase = _found(r"Login passphrase:\s+(.+)", enrolment)
    room.totp_uri = _found(r"(otpauth://\S+)", enrolment)
    fingerprint = _found(r"Server key fingerprint.*:\n\s+(.+)", enrolment)
    for name in JOURNALISTS:
        room.keys("trust-server", room.data / "server-signing.public", "--key", room.secret_key(name),
                  "--fingerprint", fingerprint)
    return room


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise CommandFailed(f"`intake journalist reset-login` printed no line matching {pattern!r}")
    return match.group(1).strip()
