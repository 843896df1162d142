"""A real intake server for end-to-end tests and benchmarks.

`run_intake_server` starts the app (wsgi:app) under real gunicorn with
deploy/gunicorn.conf.py on a free 127.0.0.1 port, with a fresh data dir made
by `intake.setup.init_data_dir` for freshly generated journalist identities,
and stops it afterwards. `SourceClient` is a small cookie-keeping HTTP client
that reads the pages' forms and submits them the way a browser without
JavaScript does (fields in document order), so tests follow the real pages
rather than hard-coded routes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from keys.identity import Identity

from intake.memory_wiping import WIPING_ENVIRONMENT

REPO = Path(__file__).resolve().parents[1]
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
STARTUP_SECONDS = 30.0


class ServerFailedError(RuntimeError):
    """The server under test did not start, or died."""


# --- gunicorn processes --------------------------------------------------------------------


@dataclass
class GunicornProcess:
    """gunicorn serving `app_spec`, listening on a socket made here and handed over as fd://."""

    process: subprocess.Popen
    port: int
    error_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerFailedError(f"gunicorn exited with {self.process.returncode}:\n{self.error_log_text()[-3000:]}")


def _listening_socket() -> socket.socket:
    # Made here and inherited by gunicorn: no window in which another process can take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _wait_until_serving(server: GunicornProcess, timeout: float, connection: Callable[..., http.client.HTTPConnection]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive()
        try:
            conn = connection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailedError(f"gunicorn did not answer within {timeout:.0f} s:\n{server.error_log_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def run_gunicorn(
    app_spec: str, log_dir: Path, env: dict[str, str] | None = None, *, cwd: Path = REPO,
    connection: Callable[..., http.client.HTTPConnection] = http.client.HTTPConnection,
) -> Iterator[GunicornProcess]:
    """Serve `app_spec` ("module:attr", importable from `cwd`) with deploy/gunicorn.conf.py;
    `connection` is how to reach it (e.g. tests.fixtures_circuits.circuit_connection when
    the server wants tor's circuit line)."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    error_log = log_dir / f"gunicorn-{port}.log"
    process_env = {**os.environ, **WIPING_ENVIRONMENT, **(env or {}), "INTAKE_BIND": f"fd://{sock.fileno()}", "PYTHONPATH": str(cwd)}
    with open(error_log, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app_spec],
            cwd=cwd,
            env=process_env,
            pass_fds=[sock.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sock.close()
    server = GunicornProcess(process, port, error_log)
    try:
        _wait_until_serving(server, STARTUP_SECONDS, connection)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


# --- the intake server ---------------------------------------------------------------------


@dataclass
class IntakeServer:
    gunicorn: GunicornProcess
    data_dir: Path
    settings: object  # intake.config.Settings
    journalists: list[Identity] = field(repr=False)

    @property
    def url(self) -> str:
        return self.gunicorn.url

    def open_store(self):
        from intake.store import Store

        return Store.open(self.settings)


def init_instance(base_dir: Path, journalist_count: int) -> tuple[Path, object, list[Identity]]:
    """A fresh data dir registered for `journalist_count` new identities (secret keys kept in memory)."""
    from intake.setup import init_data_dir

    journalists = [Identity.generate(f"journalist-{i + 1}") for i in range(journalist_count)]
    key_dir = base_dir / "journalist-public-keys"
    key_dir.mkdir()
    public_files = []
    for identity in journalists:
        path = key_dir / f"{identity.name}.pub"
        identity.public.save(path)
        public_files.append(path)
    data_dir = base_dir / "data"
    settings = init_data_dir(data_dir, public_files, key_in_data_dir=True)
    return data_dir, settings, journalists


@contextlib.contextmanager
def run_intake_server(
    base_dir: Path, *, journalist_count: int = 1, env: dict[str, str] | None = None, app_spec: str = "wsgi:app",
    connection: Callable[..., http.client.HTTPConnection] = http.client.HTTPConnection,
) -> Iterator[IntakeServer]:
    data_dir, settings, journalists = init_instance(base_dir, journalist_count)
    with run_gunicorn(app_spec, base_dir, {**(env or {}), "INTAKE_DATA": str(data_dir)}, connection=connection) as gunicorn:
        yield IntakeServer(gunicorn, data_dir, settings, journalists)


@pytest.fixture(scope="module")
def intake_server(tmp_path_factory) -> Iterator[IntakeServer]:
    """The real app under real gunicorn (deploy/gunicorn.conf.py), one journalist, for one test module."""
    with run_intake_server(tmp_path_factory.mktemp("intake-server")) as server:
        yield server


# --- a browser-like client -----------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    enctype: str
    # (name, type, value) in document order; a browser sends successful controls in this order.
    controls: list[tuple[str, str, str]]

    def names(self) -> set[str]:
        return {name for name, _, _ in self.controls}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._form: Form | None = None
        self._textarea: str | None = None
        self._link: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower(), a.get("enctype", "application/x-www-form-urlencoded").lower(), [])
            self.forms.append(self._form)
        elif tag == "a" and "href" in a:
            self._link, self._link_text = a["href"], []
        elif self._form is not None and tag == "input" and "name" in a:
            self._form.controls.append((a["name"], a.get("type", "text").lower(), a.get("value", "")))
        elif self._form is not None and tag == "button" and "name" in a:
            self._form.controls.append((a["name"], "submit", a.get("value", "")))
        elif self._form is not None and tag == "textarea" and "name" in a:
            self._form.controls.append((a["name"], "textarea", ""))
        elif self._form is not None and tag in ("select",) and "name" in a:
            self._form.controls.append((a["name"], "select", ""))

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link, " ".join("".join(self._link_text).split())))
            self._link = None


class _CodenameParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self._depth = 0  # > 0 inside <p class="codename">

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif tag == "p" and "codename" in (dict(attrs).get("class") or "").split():
            self._depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.words.extend(data.split())


@dataclass
class Page:
    url: str
    status: int
    headers: http.client.HTTPMessage
    text: str

    def _parsed(self) -> _FormParser:
        parser = _FormParser()
        parser.feed(self.text)
        return parser

    @property
    def forms(self) -> list[Form]:
        return self._parsed().forms

    @property
    def links(self) -> list[tuple[str, str]]:
        return self._parsed().links

    def form_posting_to(self, path: str) -> Form:
        for form in self.forms:
            if form.method == "post" and urlsplit(urljoin(self.url, form.action)).path == path:
                return form
        raise AssertionError(f"no form posting to {path} on {self.url} (status {self.status})")

    def codename(self) -> str:
        """The codename shown on the page (words in <p class="codename">)."""
        parser = _CodenameParser()
        parser.feed(self.text)
        if not parser.words:
            raise AssertionError(f"no codename on {self.url} (status {self.status})")
        return " ".join(parser.words)

    def form_with(self, *names: str) -> Form:
        """The first form that has controls with all these names."""
        for form in self.forms:
            if set(names) <= form.names():
                return form
        raise AssertionError(f"no form with fields {names} on {self.url} (status {self.status})")


@dataclass
class Upload:
    """A file for a multipart form: `content` is sent in pieces by whoever streams it."""

    name: str
    content: bytes
    content_type: str = "application/octet-stream"


def encode_multipart(form: Form, values: dict[str, str], files: dict[str, Sequence[Upload]]) -> tuple[str, list[bytes]]:
    """(content type, body pieces) for `form`, in document order like a browser.

    Hidden fields keep their values from the page (the CSRF token);
    `values` fills or overrides the others. File contents are separate pieces so
    a caller can stream them.
    """
    boundary = "----intake-test-" + secrets.token_hex(12)
    pieces: list[bytes] = []
    for name, kind, default in form.controls:
        if kind == "submit":
            continue
        if kind == "file":
            for upload in files.get(name, ()):
                pieces.append(
                    (
                        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{upload.name}\"\r\n"
                        f"Content-Type: {upload.content_type}\r\n\r\n"
                    ).encode()
                )
                pieces.append(upload.content)
                pieces.append(b"\r\n")
            continue
        value = values.get(name, default)
        pieces.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode() + value.encode() + b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", pieces


class SourceClient:
    """Plays a source's browser with JavaScript off: keeps cookies, follows redirects, submits forms."""

    def __init__(self, base_url: str, *, timeout: float = 60.0,
                 connection: Callable[..., http.client.HTTPConnection] = http.client.HTTPConnection):
        self.base_url = base_url.rstrip("/")
        self.cookies: dict[str, str] = {}
        self.timeout = timeout
        # connection(host, port, timeout=...): e.g. TorNetwork.http_connection to go through Tor.
        self._connection = connection
        split = urlsplit(self.base_url)
        self._host, self._port = split.hostname, split.port

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def _remember_cookies(self, response: http.client.HTTPResponse) -> None:
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                expired = morsel["max-age"] == "0" or (morsel["expires"] and "1970" in morsel["expires"])
                if expired or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def request(
        self, method: str, path: str, body: Sequence[bytes] = (), headers: dict[str, str] | None = None, *, follow_redirects: bool = True
    ) -> Page:
        url = urljoin(self.base_url + "/", path)
        conn = self._connection(self._host, self._port, timeout=self.timeout)
        try:
            all_headers = {**self._cookie_header(), **(headers or {})}
            if method == "POST":
                all_headers["Content-Length"] = str(sum(len(piece) for piece in body))
            conn.putrequest(method, urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else ""))
            for name, value in all_headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            for piece in body:
                conn.send(piece)
            response = conn.getresponse()
            text = response.read().decode("utf-8", errors="replace")
            self._remember_cookies(response)
        finally:
            conn.close()
        page = Page(url, response.status, response.headers, text)
        if follow_redirects and response.status in (301, 302, 303, 307, 308):
            return self.get(response.headers["Location"], base=url)
        return page

    def get(self, path: str, *, base: str | None = None) -> Page:
        return self.request("GET", urljoin(base or self.base_url + "/", path))

    def submit(
        self,
        page: Page,
        form: Form,
        values: dict[str, str] | None = None,
        files: dict[str, Sequence[Upload]] | None = None,
        *,
        follow_redirects: bool = True,
    ) -> Page:
        values = values or {}
        action = urljoin(page.url, form.action or page.url)
        if form.method != "post":
            query = urlencode([(n, values.get(n, v)) for n, k, v in form.controls if k != "submit"])
            return self.get(f"{action}?{query}" if query else action)
        if form.enctype == "multipart/form-data":
            content_type, pieces = encode_multipart(form, values, files or {})
        else:
            content_type = "application/x-www-form-urlencoded"
            pieces = [urlencode([(n, values.get(n, v)) for n, k, v in form.controls if k != "submit"]).encode()]
        return self.request("POST", action, pieces, {"Content-Type": content_type}, follow_redirects=follow_redirects)

    # The source's journey, found through the pages' own links and forms.

    def start_as_new_source(self) -> tuple[str, Page]:
        """Landing page -> "get a codename": returns the codename and the page showing it (with the submit form)."""
        landing = self.get("/")
        page = self.submit(landing, landing.form_posting_to("/new"))
        if page.status != 200:
            raise AssertionError(f"getting a codename failed with status {page.status}")
        return page.codename(), page

    def log_in(self, codename: str) -> Page:
        login = self.get("/login")
        return self.submit(login, login.form_with("codename"), {"codename": codename})

    def send(self, page: Page, message: str = "", files: Sequence[Upload] = (), *, follow_redirects: bool = True) -> Page:
        """Fill in and send the submit form found on `page`."""
        return self.submit(page, page.form_with("message", "files"), {"message": message}, {"files": files}, follow_redirects=follow_redirects)
