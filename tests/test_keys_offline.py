"""keys/ runs on an air-gapped laptop: it imports no network, web or intake code."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import keys

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: sockets refuse to exist, then every keys module is
# imported and the command is driven end to end; report what got imported.
_PROBE = """
import json, socket, sys

class NoNetwork(Exception):
    pass

def refuse(*args, **kwargs):
    raise NoNetwork("keys/ tried to open a socket")

socket.socket = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
before = set(sys.modules)

import importlib
for name in {modules!r}:
    importlib.import_module(name)

import io, os, tempfile, pathlib
from keys import bundle, cli, envelope
from keys.identity import Identity, KDF_MIN
from keys.server_key import ServerPublicKey, trust_server
from nacl.public import PrivateKey
from nacl.signing import SigningKey

with tempfile.TemporaryDirectory() as folder:
    folder = pathlib.Path(folder)
    alice = Identity.generate("alice")
    alice.save(folder / "alice.secret", "a passphrase here", KDF_MIN)
    (folder / "pw").write_text("a passphrase here")
    sealed = envelope.encrypt_bytes(b"tip", [alice.public.encryption_key], envelope.Metadata("message"))
    item = bundle.ExportItem("i", "message", "2026-11-28", len(sealed), ["alice"], lambda: [sealed])
    source = bundle.ExportSource("s", "brave otter", bytes(PrivateKey.generate().public_key), [item])
    server = SigningKey.generate()
    trust_server(folder / "alice.secret", ServerPublicKey.from_seed(bytes(server)))
    (folder / "b").write_bytes(b"".join(bundle.stream_export_bundle([alice.public.encryption_key], [source], server)))
    common = ["--key", str(folder / "alice.secret"), "--passphrase-file", str(folder / "pw")]
    assert cli.main(["decrypt", str(folder / "b"), *common, "--out", str(folder / "out")]) == 0
    assert cli.main(["reply", "--source", str(folder / "out" / "brave otter"), "--message", "ok", *common, "--out", str(folder / "r")]) == 0
    assert cli.main(["inspect", str(folder / "b"), *common]) == 0

print(json.dumps(sorted(set(sys.modules) - before)))
"""

FORBIDDEN = ("intake", "flask", "werkzeug", "jinja2", "click", "requests", "urllib", "urllib3", "http", "socket", "ssl", "socketserver", "asyncio", "stem", "sqlcipher3", "gunicorn", "email")


def all_keys_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(keys.__path__, "keys."))


def test_the_toolkit_imports_and_runs_with_sockets_disabled_and_loads_nothing_online():
    modules = all_keys_modules()
    assert {"keys.envelope", "keys.identity", "keys.bundle", "keys.cli", "keys.cleaning.sandbox", "keys.cleaning.triage"} <= set(modules)
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + _PROBE.format(modules=modules)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    offending = [name for name in loaded if name.split(".")[0] in FORBIDDEN]
    assert offending == [], offending


def test_no_keys_module_imports_intake_even_lazily():
    # The subprocess above sees module-level imports; this also catches imports inside functions.
    for path in (ROOT / "keys").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] in FORBIDDEN], (path.name, names)


# The core: what decrypts and replies. Cleaning (keys/cleaning/, which runs mat2 and bwrap) is
# outside it: only the command line reaches it, so the core can be audited without it.
CORE = ("envelope", "envelope_reader", "sodium_buffers", "wiping", "identity", "bundle", "bundle_reader", "unpack", "workers", "files", "index", "source_record", "errors", "progress")


def test_the_core_never_imports_the_cleaning_package():
    for name in CORE:
        tree = ast.parse((ROOT / "keys" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            assert not [n for n in names if n.startswith("keys.cleaning")], (name, names)
    probe = "import importlib, sys\n" + "".join(f"importlib.import_module('keys.{name}')\n" for name in CORE)
    probe += "print(sorted(m for m in sys.modules if m.startswith('keys.cleaning')))"
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_every_keys_module_loads_no_network_module_at_all():
    # The probe above disables sockets by importing the module first; this one checks that no keys
    # module (decrypt's worker processes included: they fork, not multiprocessing) even loads one.
    probe = "import importlib, json, sys\n" + "".join(f"importlib.import_module({name!r})\n" for name in all_keys_modules())
    # (pathlib itself loads urllib.parse, string functions only: not counted here)
    network = ("socket", "ssl", "http", "socketserver", "asyncio", "multiprocessing", "requests", "urllib3", "email")
    probe += f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {network!r})))"
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + probe],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
