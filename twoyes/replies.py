"""Answers by reply: one message from the inbound mailbox, read, matched and handled once.

A party may answer a decision or reminder mail by replying with "continue" or
"stop". Whoever delivers the message (mail/inbound.py over IMAP, or a mail
server piping it to `inbound --stdin`) hands its bytes to `handle_message`,
which decides in one transaction what it means:

- seen before (its own Message-ID, hashed): nothing, a second time;
- written by a machine (an out-of-office, a bounce) or by the practice itself:
  set aside, without an answer, so that two robots never talk to each other;
- a reply to none of our mails with links, or from another address than the
  one that mail went to: forwarded to the practice, nothing recorded;
- exactly one answer near the top of the reply's own text: recorded through
  rounds.record_decision, as if the party had pressed the button (`via: reply`),
  and confirmed in a short mail; a closed round or a passed deadline records
  nothing and says so (with the outcome);
- anything else: nothing recorded; the party gets its links again, and the
  coach gets the message forwarded, so no word from a client is lost.

The mails go through the outbox in the same transaction as the decision and
the row that marks the message handled, so a crash anywhere leaves either all
of it or none; a message read again after a crash finds its row and does
nothing more.
"""

from __future__ import annotations

import email
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

import sqlite_utils
from mailparser_reply import EmailReplyParser

from twoyes.db import transaction
from twoyes.errors import N_, TwoyesError
from twoyes.events import log_event
from twoyes.mails import queue_party_mail
from twoyes.outbox import queue_mail
from twoyes.rounds import record_decision
from twoyes.settings import Settings
from twoyes.threads import remember_thread, thread_hashes
from twoyes.times import to_db
from twoyes.tokens import new_decision_link

# The answers, in the reader's words; a phrase counts as its words in this order.
ANSWERS = {
    "continue": ("continue", "yes", "another session", "doorgaan", "ja", "nog een sessie"),
    "stop": ("stop", "no", "stoppen", "nee"),
}
# A word that turns an answer around ("I don't want to stop") makes the reply one for a person.
NEGATIONS = frozenset({"not", "don", "dont", "didn", "never", "niet", "geen", "nooit", "nog niet"})
WORD = re.compile(r"[^\W\d_]+")
# Words around an answer that say nothing more: a reply of only these and names is answered.
COURTESY = frozenset(
    "please thanks thank you very much kind regards best wishes cheers hi hello dear ok okay "
    "sure graag dank je jullie wel bedankt groet groeten hartelijke vriendelijke met hoi hallo "
    "beste prima oke doei x xx".split()
)
# An answer is short: more than this many words is a message, for the coach to read.
MAX_WORDS = 40
# What is forwarded of a message, at most (a pasted document is cut, not lost: the coach asks).
MAX_FORWARD_CHARS = 10_000

# Subjects of automatic replies, as the common mail programs write them (RFC 3834 headers
# are checked first; these catch responders that set none).
AUTOMATIC_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|autoreply"
    r"|afwezig|automatisch antwoord|niet aanwezig|vakantie|vacation|abwesenheit|absence)",
    re.IGNORECASE,
)
# Where a reply's own text ends: the quoted mail's header line, or an old-style separator.
QUOTE_START = re.compile(
    r"^\s*(>|(on|op)\s.+\s(wrote|schreef|geschreven)\s*:?\s*$|-{2,}\s*(original message"
    r"|oorspronkelijk bericht|forwarded message|doorgestuurd bericht)|_{8,}\s*$"
    r"|(from|van|sent|verzonden):\s)",
    re.IGNORECASE,
)
# Lines a phone adds under the reply: not part of the answer.
SENT_FROM = re.compile(
    r"^\s*(sent from my|verstuurd (vanaf|met) mijn|verzonden (vanaf|met|via) |get outlook for"
    r"|download outlook for)",
    re.IGNORECASE,
)

# A link of ours with its token, as a quoted mail carries it: never forwarded, since it acts
# for the party it was sent to (a coach must not get their client's Continue and Stop).
LINK_WITH_TOKEN = re.compile(r"\S*/[dbc]/[A-Za-z0-9_-]{43}\S*")

NOT_COUNTED_CLOSED = N_("This round is closed already; your answer was not needed any more.")
NOT_COUNTED_LATE = N_(
    "The deadline for this round has passed, so your answer could not be counted."
)

# What a party's decision row tells about its round, for a reply.
PARTY = """
SELECT id, round_id, role, choice, engagement_id, round_status, outcome, deadline_at, session_at,
       title, kind, coach_name, coach_email, coach_lang, name, call_name, email, lang,
       member_status
FROM round_parties WHERE id = ?
"""


@dataclass
class Reply:
    """What handling needs of one message, read once from its bytes."""

    key: str  # the SHA-256 of its Message-ID (of its bytes, when it has none)
    sender: str
    sender_name: str
    subject: str
    threads: list[str]
    machine: bool
    text: str  # the reply's own text: quotes, signatures and phone lines taken off
    full_text: str = field(repr=False)  # the whole body as text, for a forward


def handle_message(
    db: sqlite_utils.Database, raw: bytes, now: datetime, settings: Settings
) -> dict:
    """Handle one message from the inbound mailbox, exactly once; returns what was done.

    `outcome` is one of: duplicate, machine, own, unmatched, recorded, refused, unclear.
    Bytes that are no mail at all name no sender: they are set aside, like a machine's.
    """
    reply = read_message(raw)
    with transaction(db):
        seen = db.conn.execute(
            "SELECT outcome, decision_id FROM inbound_messages WHERE hash = ?", [reply.key]
        ).fetchone()
        if seen is not None:
            return {"outcome": "duplicate", "decision_id": seen["decision_id"]}
        result = _handle(db, reply, now, settings)
        db.conn.execute(
            "INSERT INTO inbound_messages (hash, received_at, outcome, decision_id)"
            " VALUES (?, ?, ?, ?)",
            [reply.key, to_db(now), result["outcome"], result.get("decision_id")],
        )
        log_event(
            db,
            "reply_handled",
            now,
            engagement_id=result.get("engagement_id"),
            round_id=result.get("round_id"),
            decision_id=result.get("decision_id"),
            outcome=result["outcome"],
        )
    return {"outcome": result["outcome"], "decision_id": result.get("decision_id")}


def _handle(db, reply: Reply, now: datetime, settings: Settings) -> dict:
    if reply.machine:
        return {"outcome": "machine"}
    if reply.sender.lower() in own_addresses(settings):
        return {"outcome": "own"}
    party = find_party(db, reply)
    if party is None:
        _forward(db, reply, now, to=practice_party(settings), party=None)
        return {"outcome": "unmatched"}
    facts = {
        "decision_id": party["id"],
        "round_id": party["round_id"],
        "engagement_id": party["engagement_id"],
    }
    choice = read_answer(reply.text)
    if choice is None:
        closed = _why_not_counted(party, now)
        if closed:
            _queue_refused(db, party, [closed], now)
            return facts | {"outcome": "refused"}
        # A coach reading their own words back would learn nothing: only a client's go on.
        forwarded = party["role"] == "client"
        if forwarded:
            _forward(db, reply, now, to=_coach_of(party), party=party)
        _queue_unclear(db, party, now, forwarded=forwarded)
        return facts | {"outcome": "unclear"}
    try:
        record_decision(db, party["id"], now, choice=choice, via={"via": "reply"})
    except TwoyesError as error:
        party = dict(db.conn.execute(PARTY, [party["id"]]).fetchone())
        _queue_refused(db, party, list(error.parts), now)
        return facts | {"outcome": "refused"}
    _queue_party_mail(db, "reply_recorded", party, now, {"choice": choice})
    if party["role"] == "client" and says_more(reply, party):
        # "Yes! See you Tuesday, I will bring the report": the answer counts, the rest is
        # for the coach, so no word of a client is lost.
        _forward(db, reply, now, to=_coach_of(party), party=party, recorded=True)
    return facts | {"outcome": "recorded"}


def _coach_of(party: dict) -> dict:
    return {"name": party["coach_name"], "email": party["coach_email"], "lang": party["coach_lang"]}


def says_more(reply: Reply, party: dict) -> bool:
    """Whether a reply holds words besides its answer, greetings and names."""
    known = COURTESY | set(_spaced(" ".join(ANSWERS["continue"] + ANSWERS["stop"])).split())
    known |= set(
        _spaced(f"{party['name']} {party['call_name'] or ''} {party['coach_name']}").split()
    )
    return len([word for word in _spaced(reply.text).split() if word not in known]) >= 3


def read_message(raw: bytes) -> Reply:
    """A message's sender, threads, whether a machine wrote it, and its own text."""
    message = email.message_from_bytes(raw, policy=policy.default)
    message_id = _header(message, "Message-ID").strip()
    key_source = message_id.encode("utf-8", "replace") if message_id else raw
    name, sender = parseaddr(_header(message, "From"))
    full_text = body_text(message)
    return Reply(
        key=hashlib.sha256(key_source).hexdigest(),
        sender=sender,
        sender_name=name,
        subject=_header(message, "Subject")[:300],
        threads=thread_hashes(_header(message, "In-Reply-To"), _header(message, "References")),
        machine=written_by_machine(message, sender),
        text=own_text(full_text),
        full_text=full_text,
    )


def _header(message: EmailMessage, name: str) -> str:
    """A header as text; a header too broken to parse counts as missing."""
    try:
        return str(message.get(name) or "")
    except (ValueError, TypeError, IndexError):
        return ""


def written_by_machine(message: EmailMessage, sender: str) -> bool:
    """RFC 3834 and what responders and mail servers write instead: never answer a machine."""
    auto_submitted = _header(message, "Auto-Submitted").strip().lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if any(_header(message, name) for name in ("X-Autoreply", "X-Autorespond")):
        return True
    if _header(message, "Precedence").strip().lower() in ("bulk", "auto_reply", "list", "junk"):
        return True
    # A delivery status notification (RFC 3464), or one from a mailer daemon that sends none.
    if message.get_content_type() == "multipart/report":
        return True
    local = sender.partition("@")[0].lower()
    if not sender or local in ("mailer-daemon", "postmaster"):
        return True
    if _header(message, "Return-Path").strip() == "<>":
        return True
    return bool(AUTOMATIC_SUBJECT.match(_header(message, "Subject")))


def body_text(message: EmailMessage) -> str:
    """The message's text: its plain part, or its HTML without the quoted mail, as lines."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except (LookupError, ValueError, TypeError, AttributeError):
        return ""
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        return html_text(content)
    return content.replace("\r\n", "\n")


def own_text(text: str) -> str:
    """What the sender wrote themselves: quoted mail, signature and phone lines removed."""
    try:
        replies = EmailReplyParser(languages=["en", "nl"]).read(text).replies
        text = replies[0].body if replies else text
    except (re.error, IndexError, AttributeError):
        pass
    lines = []
    for line in text.splitlines():
        # Some headers of a quoted mail the parser does not know (a Dutch Apple Mail's).
        if QUOTE_START.match(line) or line.rstrip() == "--":
            break
        if not SENT_FROM.match(line):
            lines.append(line.rstrip())
    return "\n".join(lines).strip()


def read_answer(text: str) -> str | None:
    """`continue` or `stop` when the text gives exactly one of them, on its first line, in
    a short message without a question or a negation; None when a person should read it."""
    if not text or "?" in text:
        return None
    words = WORD.findall(text.lower())
    if not words or len(words) > MAX_WORDS:
        return None
    spaced = _spaced(text)
    if any(f" {negation} " in spaced for negation in NEGATIONS):
        return None
    found = {
        choice
        for choice, phrases in ANSWERS.items()
        if any(f" {phrase} " in spaced for phrase in phrases)
    }
    if len(found) != 1:
        return None
    (choice,) = found
    first_line = next(line for line in text.splitlines() if line.strip())
    first = _spaced(first_line)
    return choice if any(f" {phrase} " in first for phrase in ANSWERS[choice]) else None


def _spaced(text: str) -> str:
    """The text's words, lowercased, one space between and around: a phrase is ` a b `."""
    return " " + " ".join(WORD.findall(text.lower())) + " "


def find_party(db: sqlite_utils.Database, reply: Reply) -> dict | None:
    """The party whose mail this replies to, when it came from that party's own address."""
    if not reply.threads or not reply.sender:
        return None
    rows = db.conn.execute(
        "SELECT decision_id FROM reply_threads"
        " WHERE hash IN (SELECT value FROM json_each(?)) ORDER BY created_at DESC",
        [json.dumps(reply.threads)],
    ).fetchall()
    for (decision_id,) in rows:
        party = db.conn.execute(PARTY, [decision_id]).fetchone()
        if party is not None and party["email"].lower() == reply.sender.lower():
            return dict(party)
    return None


def own_addresses(settings: Settings) -> set[str]:
    """The practice's own addresses: mail from them is never answered (no loops)."""
    addresses = {
        parseaddr(settings.mail_default_sender)[1],
        parseaddr(settings.inbound_address or "")[1],
    }
    return {address.lower() for address in addresses if address}


def practice_party(settings: Settings) -> dict:
    """Who hears of a reply that belongs to no party: PRACTICE_CONTACT when it is an
    address, else the From of the practice's mails."""
    contact = settings.practice_contact
    address = ""
    if "@" in contact and "://" not in contact:
        address = getaddresses([contact])[0][1]
    address = address or parseaddr(settings.mail_default_sender)[1]
    return {
        "name": settings.practice_name or "twoyes",
        "email": address,
        "lang": settings.language,
    }


def _why_not_counted(party: dict, now: datetime) -> str | None:
    if party["round_status"] == "closed":
        return NOT_COUNTED_CLOSED
    if to_db(now) >= party["deadline_at"]:
        return NOT_COUNTED_LATE
    return None


def _forward(
    db, reply: Reply, now: datetime, *, to: dict, party: dict | None, recorded: bool = False
) -> None:
    """The message, as text, to the coach (a party's reply that was unclear or said more
    than its answer) or the practice; the quoted mail's links are taken out."""
    queue_mail(
        db,
        "reply_forward",
        now,
        to=(to["name"], to["email"]),
        reply_to=(reply.sender_name or reply.sender, reply.sender) if reply.sender else None,
        lang=to["lang"],
        engagement_id=party["engagement_id"] if party else None,
        context={
            "role": "coach",
            "name": to["name"],
            "call_name": None,
            "matched": party is not None,
            "recorded": recorded,
            "sender_name": reply.sender_name or reply.sender,
            "sender_email": reply.sender,
            "reply_subject": reply.subject,
            "session_at": party["session_at"] if party else None,
            "title": party["title"] if party else None,
            "text": LINK_WITH_TOKEN.sub("[…]", reply.full_text.strip()[:MAX_FORWARD_CHARS]),
        },
    )


def _queue_party_mail(db, kind: str, party: dict, now: datetime, facts: dict) -> int:
    """A mail about their reply to the party, in their language; replies to it reach the coach."""
    coach = (party["coach_name"], party["coach_email"])
    return queue_party_mail(db, kind, party, now, facts, reply_to=coach)


def _queue_unclear(db, party: dict, now: datetime, *, forwarded: bool) -> None:
    """The party's links again, fresh; a reply to this mail is read like one to the first."""
    mail_id = _queue_party_mail(
        db,
        "reply_unclear",
        party,
        now,
        {
            "forwarded": forwarded,
            "session_at": party["session_at"],
            "deadline_at": party["deadline_at"],
            "decide_nonce": new_decision_link(db, party["id"], now),
        },
    )
    remember_thread(db, mail_id, party["id"], now)


def _queue_refused(db, party: dict, notice: list[str], now: datetime) -> None:
    """Nothing was recorded, and why; a closed round's outcome with it."""
    outcome = party["outcome"] if party["round_status"] == "closed" else None
    _queue_party_mail(db, "reply_refused", party, now, {"notice": notice, "outcome": outcome})


class _HtmlText(HTMLParser):
    """An HTML reply's own text: stops where the quoted mail begins (Gmail's gmail_quote,
    Apple Mail's blockquote, Outlook's divRplyFwdMsg or the rule above it, Thunderbird's
    moz-cite-prefix), and writes block elements as lines."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table"})
    QUOTES = ("gmail_quote", "divrplyfwdmsg", "appendonsend", "moz-cite-prefix", "yahoo_quoted")
    HIDDEN = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.quoted = False
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        marks = " ".join(str(value or "") for name, value in attrs if name in ("class", "id"))
        if tag in ("blockquote", "hr") or any(quote in marks.lower() for quote in self.QUOTES):
            self.quoted = True
        if tag in self.HIDDEN:
            self.hidden += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.quoted and not self.hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
