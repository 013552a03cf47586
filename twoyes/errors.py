"""The few ways a request can fail, each carrying a sentence the user can act on.

The domain raises these; cli.py turns them into one line and exit status 1,
app.py into a 404, 409 or 400 page.
"""


def N_(message: str) -> str:  # noqa: N802 (the gettext convention)
    """Mark a sentence for translation without translating it here.

    The domain knows no Flask and no reader; the web layer shows a marked
    sentence in the reader's language with gettext, the command line as is.
    """
    return message


class TwoyesError(Exception):
    """Something the user asked for cannot be done; the message says why.

    `parts` holds the sentences one by one (each a msgid for translation).
    """

    status = 400

    def __init__(self, *parts: str) -> None:
        super().__init__(" ".join(parts))
        self.parts = parts


class NotFound(TwoyesError):
    """An id, address or token that does not exist (or no longer opens)."""

    status = 404


class Conflict(TwoyesError):
    """The request is well formed but clashes with the current state (a closed round)."""

    status = 409


class Invalid(TwoyesError):
    """A value that can never be right: a malformed address, a usefulness of 11."""

    status = 400
