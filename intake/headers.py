"""The response headers every answer gets, from the apps and from gunicorn itself.

Kept free of Flask: gunicorn's worker class (intake.gunicorn_worker) imports it in
the master process, before a worker has patched the standard library.

The pages need nothing but our own stylesheet and same-origin form posts, so the
policy allows exactly that. Every response is no-store: a source's pages must not
linger in a cache on a shared or seized computer. The one exception is a static file
under a content-hashed name (intake.app.assets), which holds nothing about anyone.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
