"""gunicorn settings for intake (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`).

Slow clients are normal over Tor and are also an attack. A thread per connection
(sync or gthread workers) is held by whoever dribbles a request, so 30 slowloris
connections stop 2 workers x 4 threads for as long as they like. The gevent
worker gives each connection a greenlet instead: a connection that is waiting
costs a few KiB, not a thread, and the event loop keeps serving everyone else.
Request bodies are streamed to the app as they arrive (nothing is buffered to
disk: there is no proxy in front).

What must not run on the event loop is long CPU work: Argon2id (the codename
KDF) runs in a real OS thread via `intake.worker_threads.run_in_os_thread`,
which the KdfGate uses; libsodium releases the GIL while it works, so the
loop keeps serving pages meanwhile.

Environment:
  INTAKE_BIND                 address to listen on (default 127.0.0.1:8080) when gunicorn is
                              run by hand. `intake serve` makes the sockets itself (unix
                              sockets for tor, loopback ports when asked for) and passes
                              them as --bind fd://N, which takes precedence
  INTAKE_WORKERS              worker processes (default: one per CPU core)
  INTAKE_WORKER_CONNECTIONS   connections per worker (default 1500)
  INTAKE_BODY_MIN_BYTES_PER_SECOND, INTAKE_BODY_WINDOW_SECONDS, INTAKE_BODY_DEADLINE_SECONDS
                              how fast a request body must arrive (default 1024 bytes/s
                              averaged over each 60 s) and by when (default: the upload limit at
                              12 KiB/s, at least 4 h); see
                              intake/body_pace.py
  INTAKE_TOR_CIRCUIT_IDS      auto (default): a connection that opens with tor's PROXY line
                              (HiddenServiceExportCircuitID haproxy) is counted by its
                              circuit; required: connections without it are refused; off
  INTAKE_CONNECTIONS_PER_CIRCUIT  connections one circuit may hold per worker (default 12)
  INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND  requests per second one circuit may make per worker
                              (default 4, in bursts of 16)
  INTAKE_MAX_UPLOAD_MIB, INTAKE_UPLOADS_PER_WORKER, INTAKE_UPLOADS_PER_CIRCUIT, INTAKE_SOURCE_LANGUAGE
                              the app's limits and the source pages' language (intake/config.py);
                              all in docs/operator.md
"""

from __future__ import annotations

import logging
import os
import signal

from intake.body_pace import count_from_environment, worker_limits_from_environment
from intake.config import operator_settings_from_environment
from intake.child_processes import die_with_parent
from intake.logs import redact
from intake.memory_key import environment_for_children
from intake.memory_wiping import missing_wiping

# Workers inherit the master's allocator settings: without them a request's plaintext
# outlives it in freed memory (intake.memory_wiping). `intake serve` sets them.
if _missing := missing_wiping(os.environ):
    raise SystemExit("intake: refusing to serve without wiping freed memory; start it with "
                     f"`intake serve`, or set {' '.join(_missing)} in gunicorn's environment")

bind = [os.environ.get("INTAKE_BIND", "127.0.0.1:8080")]

# gunicorn's gevent worker, answering the requests gunicorn refuses itself (over-long
# request line, malformed headers) with intake's strict headers and no echo of the request.
worker_class = "intake.gunicorn_worker.IntakeGeventWorker"
# One process per core: each gevent worker is one event-loop thread (plus KDF threads).
workers = count_from_environment("INTAKE_WORKERS", os.cpu_count() or 1)
# A waiting connection costs a greenlet and a file descriptor (~40 KiB measured, see
# docs/worker-model.md); what is costly (a store, an upload, a derivation) has its own
# cap in the app. 2 workers x 1500 hold 2,000 slow clients with room for real sources.
# Needs a file limit above it (deploy/intake.service: LimitNOFILE).
worker_connections = count_from_environment("INTAKE_WORKER_CONNECTIONS", 1500)
# Request bodies: minimum rate and deadline, and tor's circuit ids (intake.body_pace).
# Read here so that a bad value stops the server at once; each worker reads them again.
worker_limits_from_environment()
try:
    operator_settings_from_environment()  # the app's (upload size, uploads in flight, pages' language), read again in each worker
except ValueError as error:
    raise SystemExit(f"intake: {error}") from None

# With the gevent worker, `keepalive` is also the deadline for a request's headers
# (gunicorn reads every request line and header block under this timeout): a
# connection that dribbles headers is dropped after it. Bodies have a minimum rate
# and a deadline of their own (intake.body_pace), suited to a large upload over Tor.
keepalive = 20
# Heartbeat: a worker whose event loop is stuck for this long is replaced.
timeout = 60
graceful_timeout = 30

# Requests are small apart from their bodies; refuse oversized request lines and headers early.
limit_request_line = 2048
limit_request_fields = 40
limit_request_field_size = 4096

# The app must import after gevent has patched the standard library (in the worker).
preload_app = False

# No access log, ever: it would record who fetched what and when.
accesslog = None
errorlog = "-"
loglevel = "warning"
capture_output = False
# Behind tor every client is tor itself; never trust forwarded client addresses. gunicorn
# trusts any peer on a unix socket (which is how tor reaches intake) to set the scheme and
# forwarding headers below: none are honoured, whoever sends them.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""
# Off: tor's PROXY line (INTAKE_TOR_CIRCUIT_IDS) is read and removed by intake's worker.
# gunicorn's own reading trusts the line from any peer on a unix socket and from
# loopback on TCP, and serves a connection without one as if none was expected, so a
# client of a tor that does not send it could name any circuit it likes.
proxy_protocol = "off"
# No runtime control socket (not needed, and it would be one more thing listening).
control_socket_disable = True
proc_name = "intake"


# Every worker seals the journalist login state under the same key, which lives only in memory
# (intake.memory_key): `intake serve` passes its own; otherwise this master makes one for its workers.
os.environ.update(environment_for_children())

# Request details stay out of the error log: gunicorn's messages and exception texts
# are rewritten by the same filter the Flask apps put on their loggers (intake.logs).
redact(logging.getLogger("gunicorn.error"))


def post_fork(server, worker) -> None:
    """A worker stops (gracefully) when its master dies, even if the master is killed outright:
    an orphaned worker would keep serving on the inherited sockets."""
    die_with_parent(signal.SIGTERM, worker.ppid)
