"""gunicorn entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app` (data dir from $INTAKE_DATA)."""

from intake.app import create_app

app = create_app()
