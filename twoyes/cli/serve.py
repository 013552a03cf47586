"""`serve`: the development server, with the tokens kept out of its log."""

from __future__ import annotations

import click

from twoyes.logs import hide_tokens
from twoyes.settings import ConfigError
from twoyes.web import create_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
def serve(host, port):
    """Run the web app (for production use gunicorn, see the README).

    Example: python cli.py serve --port 8000
    """
    from werkzeug.serving import WSGIRequestHandler

    class QuietTokens(WSGIRequestHandler):
        def log(self, type, message, *args):
            args = tuple(hide_tokens(arg) if isinstance(arg, str) else arg for arg in args)
            super().log(type, hide_tokens(message), *args)

    try:
        app = create_app()
    except ConfigError as error:
        raise click.ClickException(f"The configuration is not right: {error}") from error
    app.run(host=host, port=port, request_handler=QuietTokens)
