"""A WSGI app that answers how many objects the worker's garbage collector has frozen
(tests/test_memory_wiping.py runs it under the shipped gunicorn configuration)."""

import gc


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(gc.get_freeze_count()).encode()]
