"""Reading the inbound mailbox over IMAP: each message handed to the core, then moved.

The practice's replies mailbox (INBOUND_IMAP_*) is read over TLS from the start,
its certificate verified against the system's CAs or INBOUND_IMAP_CA_FILE. Each
message in INBOUND_IMAP_FOLDER is fetched without marking it read, handled by
replies.handle_message (which commits), and only then moved to the folder
`processed`: a run that dies in between leaves the message where it was, and
the next run finds it handled already (by its Message-ID) and only moves it.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlite_utils

from twoyes.replies import handle_message
from twoyes.settings import Settings

PROCESSED = "processed"


@dataclass
class InboundReport:
    handled: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class InboundError(Exception):
    """The mailbox could not be read: one sentence for the operator."""


def open_imap(settings: Settings) -> imaplib.IMAP4_SSL:
    """A logged-in IMAP connection with a verified certificate; InboundError when not."""
    context = ssl.create_default_context(cafile=settings.inbound_imap_ca_file)
    where = f"{settings.inbound_imap_host}:{settings.inbound_imap_port}"
    try:
        imap = imaplib.IMAP4_SSL(
            settings.inbound_imap_host,
            settings.inbound_imap_port,
            ssl_context=context,
            timeout=settings.mail_timeout,
        )
    except ssl.SSLError as error:
        raise InboundError(
            f"The IMAP server {where} answered, but its certificate does not verify ({error});"
            " set INBOUND_IMAP_CA_FILE for a private one."
        ) from error
    except OSError as error:
        raise InboundError(f"The IMAP server {where} cannot be reached: {error}") from error
    try:
        imap.login(settings.inbound_imap_username, settings.inbound_imap_password)
    except (imaplib.IMAP4.error, OSError) as error:
        _close(imap)
        raise InboundError(f"The IMAP server {where} refused the login: {error}") from error
    return imap


def check_mailbox(settings: Settings) -> str:
    """What `check` says of a mailbox that works: reached, verified, logged in, its folder
    there; InboundError when not. Nothing is read or moved."""
    imap = open_imap(settings)
    try:
        _select(imap, settings.inbound_imap_folder, readonly=True)
    except (imaplib.IMAP4.error, OSError) as error:
        raise InboundError(f"The inbound mailbox could not be read: {error}") from error
    finally:
        _close(imap)
    return (
        f"{settings.inbound_imap_username} at {settings.inbound_imap_host}:"
        f"{settings.inbound_imap_port} (TLS verified, folder {settings.inbound_imap_folder})"
    )


def read_inbound(
    db: sqlite_utils.Database,
    now: datetime,
    settings: Settings,
    on_message: Callable[[str, dict], None] = lambda uid, result: None,
) -> InboundReport:
    """Handle every message waiting in the inbound folder; InboundError when it cannot be read.

    A message whose handling fails stays in the folder for the next run, and the report says so.
    """
    report = InboundReport()
    imap = open_imap(settings)
    try:
        _select(imap, settings.inbound_imap_folder)
        _make_processed_folder(imap)
        # The capabilities after the login: a server names MOVE only to a logged-in client.
        status, named = imap.capability()
        moves = status == "OK" and b"MOVE" in b" ".join(named).upper().split()
        status, found = imap.uid("SEARCH", None, "UNDELETED")
        _expect(status, found, "search the folder")
        for uid in found[0].split():
            raw = _fetch(imap, uid)
            if raw is None:
                continue  # gone meanwhile: another run took it
            try:
                result = handle_message(db, raw, now, settings)
            except Exception as error:  # noqa: BLE001  # one bad message must not stop the rest
                report.errors.append(
                    f"message {uid.decode()} in {settings.inbound_imap_folder} could not be"
                    f" handled and stays there: {error!r}"
                )
                continue
            # Only now, with the transaction committed, does the message leave the folder.
            _move(imap, uid, moves)
            report.handled[result["outcome"]] = report.handled.get(result["outcome"], 0) + 1
            on_message(uid.decode(), result)
        if not moves:
            imap.expunge()
    except (imaplib.IMAP4.error, OSError) as error:
        raise InboundError(f"Reading the inbound mailbox stopped: {error}") from error
    finally:
        _close(imap)
    return report


def _select(imap: imaplib.IMAP4_SSL, folder: str, readonly: bool = False) -> None:
    status, data = imap.select(_quoted(folder), readonly=readonly)
    if status != "OK":
        raise InboundError(
            f"The inbound mailbox has no folder {folder!r} (INBOUND_IMAP_FOLDER): {data!r}"
        )


def _make_processed_folder(imap: imaplib.IMAP4_SSL) -> None:
    """`processed` exists after this; CREATE of an existing folder is refused, which is fine."""
    status, data = imap.list('""', PROCESSED)
    if status == "OK" and any(item for item in data if item):
        return
    imap.create(PROCESSED)


def _fetch(imap: imaplib.IMAP4_SSL, uid: bytes) -> bytes | None:
    """The message's bytes, without setting \\Seen (a person looking at the box sees it new)."""
    status, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    _expect(status, data, "fetch a message")
    for item in data:
        if isinstance(item, tuple):
            return item[1]
    return None


def _move(imap: imaplib.IMAP4_SSL, uid: bytes, moves: bool) -> None:
    if moves:
        status, data = imap.uid("MOVE", uid, PROCESSED)
        _expect(status, data, "move a message")
        return
    status, data = imap.uid("COPY", uid, PROCESSED)
    _expect(status, data, "copy a message")
    status, data = imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
    _expect(status, data, "mark a message moved")


def _expect(status: str, data, what: str) -> None:
    if status != "OK":
        raise InboundError(f"The IMAP server would not {what}: {data!r}")


def _quoted(folder: str) -> str:
    """A folder name as IMAP quotes it, so that one with a space works."""
    if re.fullmatch(r"[A-Za-z0-9._/-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _close(imap: imaplib.IMAP4_SSL) -> None:
    try:
        imap.logout()
    except (imaplib.IMAP4.error, OSError):
        pass
