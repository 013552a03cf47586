"""The WSGI entry point: any server runs `app:create_app()` (the code lives in twoyes/)."""

from twoyes.web import create_app  # noqa: F401
