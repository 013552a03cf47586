"""Log lines without tokens: a link's path is its key, so no log may keep it.

Used by the development server (cli.py serve), by gunicorn through
gunicorn.conf.py, and by the app's own logger (Flask logs the path of a
request that failed).
"""

from __future__ import annotations

import logging
import re

# A character of the path as a client may spell it: as is, or percent-encoded, once or more
# (a server reads "%2F" as "/" and "%64" as "d"; "%2564" is "%64" to the next one).
SLASH = r"(?:/|%(?:25)*2F)"
LETTER = r"(?:[DBC]|%(?:25)*[46][234])"
# After /d/, /b/ or /c/ everything up to the end of the path is the token's place (however
# it is written), except a trailing /continue, /stop or /rounds/N, which say what was done.
TOKEN_IN_PATH = re.compile(
    rf"(?P<prefix>{SLASH}+{LETTER}{SLASH}+)"
    r"[^\s\"?]+?"
    rf"(?P<suffix>{SLASH}(?:continue|stop|rounds{SLASH}[0-9]+))?"
    r"(?=[\s\"?]|$)",
    re.IGNORECASE,
)


def hide_tokens(text: str) -> str:
    """The text with every token in a path, however spelled, replaced by an ellipsis."""
    return TOKEN_IN_PATH.sub(r"\g<prefix>…\g<suffix>", text)


class HideTokens(logging.Filter):
    """A logging filter that takes tokens out of a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = hide_tokens(str(record.msg))
        if record.args:
            record.args = tuple(
                hide_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True
