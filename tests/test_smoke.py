"""The walk-through of the README, end to end over real SMTP: one round, both continue."""

from support import POLICY, T0, deliver, links_in, text_of, token_of

from twoyes.sessions import record_session_done


def test_both_continue_by_mail_links(app, db, client, engagement, smtp):
    session_id, round_id = record_session_done(db, engagement, T0, POLICY)
    report = deliver(app, db)
    assert report.sent == 2
    for address in ("bob@example.org", "anna@example.org"):
        (message,) = smtp.to(address)
        continue_link = next(link for link in links_in(message) if link.endswith("/continue"))
        token = token_of(continue_link)
        page = client.get(f"/d/{token}/continue")
        assert page.status_code == 200
        answer = client.post(f"/d/{token}", data={"choice": "continue", "served": _stamp(page)})
        assert answer.status_code == 303
    smtp.clear()
    deliver(app, db)
    outcomes = {m["To"]: text_of(m) for m in smtp.messages}
    assert len(outcomes) == 2
    assert all("continue" in body for body in outcomes.values())
    row = db.conn.execute("SELECT status, outcome FROM rounds WHERE id = ?", [round_id]).fetchone()
    assert tuple(row) == ("closed", "continue")


def _stamp(page) -> str:
    import re

    return re.search(r'name="served" value="([^"]+)"', page.get_data(as_text=True)).group(1)
