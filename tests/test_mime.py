"""mime.py: the mail's bytes, written without EmailMessage, read as EmailMessage's would be."""

from __future__ import annotations

import email
import os
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from twoyes.mail.mime import header, multipart_alternative, multipart_with_calendar


@hypothesis_settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 80)), deadline=None, database=None
)
@given(
    text=st.text(),
    html=st.text(),
    name=st.text(st.characters(exclude_categories=["C", "Zl", "Zp"])),
)
@example(
    text="Zoë\n.\nFrom here\n--=_0\n= =3D =_\ntrailing \t\nlone\rreturn\r\nx" + "é" * 200,
    html="<p>" + "a" * 300 + "</p>\u2028\x85<p>\u00c5ngstr\u00f6m \U0001f600</p>",
    name="Maria José Fernández-Ångström van den Berg-Østergaard Ølsen",
)
def test_a_written_mail_reads_as_the_standard_librarys_email_message(text, html, name):
    """mime.py writes the frame itself and encodes with the undocumented email.quoprimime: a
    reader sees exactly what EmailMessage gives, and each body is encoded byte for byte alike."""
    to = Address(display_name=name, addr_spec="anna@example.org")
    data = multipart_alternative(
        [header("Subject", name), header("From", "Practice <p@example.org>"), header("To", to)],
        text,
        html,
    )
    reference = EmailMessage(policy=policy.SMTP)
    reference["Subject"] = name
    reference["From"] = "Practice <p@example.org>"
    reference["To"] = to
    reference.set_content(text, cte="quoted-printable")
    reference.add_alternative(html, subtype="html", cte="quoted-printable")

    ours, theirs = (
        email.message_from_bytes(raw, policy=policy.default) for raw in (data, reference.as_bytes())
    )
    assert not ours.defects
    for field in ("Subject", "From", "To", "MIME-Version"):
        assert ours[field] == theirs[field], field
    assert ours.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        mine, standard = ours.get_body((kind,)), theirs.get_body((kind,))
        assert mine["Content-Type"] == standard["Content-Type"]
        assert mine["Content-Transfer-Encoding"] == "quoted-printable"
        assert mine.get_content() == standard.get_content()
        assert mine.get_payload() == standard.get_payload()
    assert all(len(line) <= 78 for line in data.split(b"\r\n")), "too long for SMTP"
    assert b"\n" not in data.replace(b"\r\n", b"")


@pytest.mark.parametrize("value", ["Hello\r\nBcc: all@example.org", "Hello\nBcc: x", "a\rb"])
def test_a_header_with_a_line_break_is_refused_before_any_mail_is_written(value):
    """A name or subject that could add a header (Bcc) never reaches the wire."""
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        header("Subject", value)


@hypothesis_settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None, database=None
)
@given(
    text=st.text(),
    html=st.text(),
    calendar=st.text(st.characters(exclude_categories=["Cs"])),
    method=st.sampled_from(["REQUEST", "CANCEL"]),
)
@example(
    text="Zoë",
    html="<p>é</p>",
    calendar="BEGIN:VCALENDAR\nSUMMARY:Sessie met Zoë Ångström\nEND:VCALENDAR",
    method="CANCEL",
)
def test_a_mail_with_an_invitation_reads_as_the_standard_librarys(text, html, calendar, method):
    """The invitation's frame is written by hand too: the text, the HTML and the calendar as
    alternatives, the .ics attached, each read back exactly as EmailMessage's."""
    data = multipart_with_calendar([header("Subject", "Invitation")], text, html, calendar, method)
    ics = "\r\n".join(calendar.splitlines()) + "\r\n"
    reference = EmailMessage(policy=policy.SMTP)
    reference["Subject"] = "Invitation"
    reference.set_content(text, cte="quoted-printable")
    reference.add_alternative(html, subtype="html", cte="quoted-printable")
    reference.add_alternative(ics, subtype="calendar", cte="base64", params={"method": method})
    reference.add_attachment(
        ics.encode("utf-8"), maintype="application", subtype="ics", filename="invite.ics"
    )

    ours, theirs = (
        email.message_from_bytes(raw, policy=policy.default) for raw in (data, reference.as_bytes())
    )
    assert not ours.defects
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/mixed"
    mine = [part for part in ours.walk() if not part.is_multipart()]
    standard = [part for part in theirs.walk() if not part.is_multipart()]
    assert [p.get_content_type() for p in mine] == [p.get_content_type() for p in standard]
    for one, other in zip(mine, standard, strict=True):
        assert one.get_content() == other.get_content()
        assert one.get_payload() == other.get_payload()
        assert one.get_param("method") == other.get_param("method")
        assert one.get_filename() == other.get_filename()
    assert mine[2].get_param("method") == method
    assert all(len(line) <= 78 for line in data.split(b"\r\n")), "too long for SMTP"
    assert b"\n" not in data.replace(b"\r\n", b"")
