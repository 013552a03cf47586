"""Writing a mail's bytes: headers and a text/HTML multipart/alternative, without EmailMessage;
with a calendar invitation, the iCalendar part and its .ics attachment besides.

Why it exists: building and flattening an `EmailMessage` for each mail (as
Flask-Mail's Message does) took about half of a whole `send` run, because the
modern policy parses every header it is given and folds it again (measured
for issue 12: 2.9 ms a mail, against 0.09 ms for the frame written here, its
repeated headers cached). Each header still goes through the standard
library's SMTP policy (so it is folded, RFC 2047-encoded and checked for
CR/LF exactly as EmailMessage would); only the frame around the two bodies
is written by hand.

The trap: the bodies are encoded with `email.quoprimime`, the module
EmailMessage itself uses for quoted-printable, but one the standard library
does not document and may change. tests/test_mime.py holds a property test
(hypothesis) that compares what this module writes with what EmailMessage
writes for the same texts and names; if a Python upgrade changes
quoprimime, that test says so before a mail goes out wrong.
"""

from __future__ import annotations

import base64
import functools
import secrets
from email import policy, quoprimime
from email.headerregistry import Address

# The modern policy folds a long accented name correctly (Flask-Mail 0.10's legacy one puts
# a space inside it), encodes non-ASCII words (RFC 2047) and refuses CR/LF in any header.
SMTP = policy.SMTP


def header(name: str, value: str | Address) -> str:
    """One header, folded and ending in CRLF, written the way EmailMessage writes it.

    ValueError (or a subclass) when the value cannot be a header, e.g. CR/LF in a name.
    """
    return SMTP.fold(*SMTP.header_store_parse(name, value))


# The modern policy parses every header it writes, and most mails of a run share their
# subject and reply to one of a few coaches: so each of these is written once.
@functools.lru_cache(maxsize=1024)
def subject_header(subject: str) -> str:
    return header("Subject", subject)


@functools.lru_cache(maxsize=4096)
def address_header(name: str, display_name: str, address: str) -> str:
    return header(name, Address(display_name=display_name, addr_spec=address))


def multipart_alternative(head: list[str], text: str, html: str) -> bytes:
    """The whole mail: its headers, then the text and the HTML as alternatives, in UTF-8.

    The same shape EmailMessage gives set_content(text) plus add_alternative(html), each
    part quoted-printable, so no line is too long for SMTP and the result is 7-bit ASCII.
    """
    # "=_" never occurs in quoted-printable, so no part can contain the boundary (RFC 2045).
    boundary = f"=_{secrets.token_hex(12)}"
    return "".join(
        [
            *head,
            "MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
            f"\r\n--{boundary}\r\n",
            'Content-Type: text/plain; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            f"\r\n--{boundary}\r\n",
            'Content-Type: text/html; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            f"\r\n--{boundary}--\r\n",
        ]
    ).encode("ascii")


def quoted_printable(text: str) -> str:
    """The body as EmailMessage.set_content(text, cte="quoted-printable") writes it."""
    # Like set_content: every line ending becomes one newline, and the UTF-8 bytes go to
    # quoprimime as latin-1 characters, one per byte, which it then writes as =XX.
    lines = text.encode("utf-8").splitlines()
    body = b"\n".join(lines).decode("latin-1") + "\n"
    return quoprimime.body_encode(body, SMTP.max_line_length, eol="\r\n")


def multipart_with_calendar(
    head: list[str], text: str, html: str, calendar: str, method: str
) -> bytes:
    """A mail with a calendar invitation: the text, the HTML and the invitation itself as
    alternatives (`text/calendar; method=...`, which mail programs show as an invitation),
    and the same invitation as an `invite.ics` attachment for those that show none.

    The shape EmailMessage gives set_content(text), add_alternative(html) and
    add_alternative(calendar, subtype="calendar", params={"method": ...}, cte="base64"),
    then add_attachment(bytes, "application", "ics", filename="invite.ics"). Only
    invitations take this way; every other mail keeps multipart_alternative's.
    """
    mixed, alternative = f"=_{secrets.token_hex(12)}", f"=_{secrets.token_hex(12)}"
    ics = "\r\n".join(calendar.splitlines()) + "\r\n"  # as iCalendar wants its lines
    return "".join(
        [
            *head,
            "MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/mixed; boundary="{mixed}"\r\n',
            f"\r\n--{mixed}\r\n",
            f'Content-Type: multipart/alternative; boundary="{alternative}"\r\n',
            f"\r\n--{alternative}\r\n",
            'Content-Type: text/plain; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            f"\r\n--{alternative}\r\n",
            'Content-Type: text/html; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            f"\r\n--{alternative}\r\n",
            f'Content-Type: text/calendar; charset="utf-8"; method="{method}"\r\n',
            "Content-Transfer-Encoding: base64\r\n\r\n",
            base64_lines(ics.encode("utf-8")),
            f"\r\n--{alternative}--\r\n",
            f"\r\n--{mixed}\r\n",
            'Content-Type: application/ics; name="invite.ics"\r\n',
            "Content-Transfer-Encoding: base64\r\n",
            'Content-Disposition: attachment; filename="invite.ics"\r\n\r\n',
            base64_lines(ics.encode("utf-8")),
            f"\r\n--{mixed}--\r\n",
        ]
    ).encode("ascii")


def base64_lines(data: bytes) -> str:
    """Base64 in lines of 76 characters, each ending in CRLF, as EmailMessage writes it."""
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
