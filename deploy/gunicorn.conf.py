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
  INTAKE_WORKER_CONNECTIONS   connections per worker (default 250)
"""

from __future__ import annotations

import logging
import os
import signal

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
workers = int(os.environ.get("INTAKE_WORKERS", str(os.cpu_count() or 1)))
# Each connection that reaches the app holds a store connection (file descriptors,
# page cache), so the cap is far below gevent's default of 1000.
worker_connections = int(os.environ.get("INTAKE_WORKER_CONNECTIONS", "250"))

# With the gevent worker, `keepalive` is also the deadline for a request's headers
# (gunicorn reads every request line and header block under this timeout): a
# connection that dribbles headers is dropped after it. Bodies are not bounded
# in time, because a large upload over Tor is legitimately slow.
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
proxy_protocol = False
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
