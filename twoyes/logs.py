"""Log lines without tokens: a link's path is its key, so no log may keep it.

Used by the development server (cli.py serve), by gunicorn through
gunicorn.conf.py, and by the app's own logger (Flask logs the path of a
request that failed).
"""

from __future__ import annotations

import logging
import re

TOKEN_IN_PATH = re.compile(r"/([dbc])/[A-Za-z0-9_-]+")


def hide_tokens(text: str) -> str:
    """The text with every token in a path replaced by an ellipsis."""
    return TOKEN_IN_PATH.sub(r"/\1/…", text)


class HideTokens(logging.Filter):
    """A logging filter that takes tokens out of a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = hide_tokens(str(record.msg))
        if record.args:
            record.args = tuple(
                hide_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True
