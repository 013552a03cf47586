"""The commands for a coach's work: engagements and their members, and sessions.

`engagement start` begins one (a group with several --client options),
`session add` plans a session, `session move` and `session cancel` change it, and
`session done` records one that was held, which opens its round and mails every party (R1).
"""

from __future__ import annotations

import click

from twoyes.cli.options import (
    WholeNumber,
    get_db,
    json_option,
    now_option,
    print_json,
    print_rows,
    settings,
    with_app,
)
from twoyes.cli.terminal import local
from twoyes.engagements import (
    describe_engagement,
    find_same_active_engagement,
    list_engagements,
    reopen_engagement,
    start_engagement,
)
from twoyes.errors import Conflict, Invalid
from twoyes.labels import ENDING_LABELS, REASON_LABELS
from twoyes.members import add_member, remove_member
from twoyes.rounds import get_coach_decision_id, record_decision
from twoyes.rules import CHOICES, REASONS
from twoyes.sessions import cancel_session, move_session, plan_session, record_session_done
from twoyes.times import utcnow


@click.group()
def engagement():
    """Start, list, show and reopen engagements."""


@engagement.command(name="start")
@click.option("--coach", "coach_email", required=True, help="The coach's e-mail address.")
@click.option(
    "--client",
    "client_emails",
    required=True,
    multiple=True,
    help="A client's address; repeat for a group.",
)
@click.option("--title", help="A short name, such as 'Leadership training'.")
@click.option(
    "--min-members",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Groups: how many members must continue for the group to go on.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Start it even though the same coach and clients have an active engagement.",
)
@click.option(
    "--no-welcome",
    is_flag=True,
    help="Send the clients no welcome mail (an engagement moved in from before).",
)
@json_option
@with_app
def engagement_start(coach_email, client_emails, title, min_members, again, no_welcome, as_json):
    """Start an engagement; two or more clients make a group.

    Each client gets a welcome mail that says how it works (every session can be
    the last), and the coach a confirmation with the same sentences.

    Example: python cli.py engagement start --coach bob@example.org --client anna@example.org
    """
    same = not again and find_same_active_engagement(get_db(), coach_email, list(client_emails))
    if same:
        name = f"engagement {same['id']}" + (f" ({same['title']})" if same["title"] else "")
        raise Conflict(
            f"The same coach and clients already have an active {name}; plan its next session "
            f"with `python cli.py session add {same['id']} --at ...`, or add --again to start "
            "another one."
        )
    engagement_id = start_engagement(
        get_db(),
        coach_email,
        list(client_emails),
        utcnow(),
        title=title,
        min_members=min_members,
        mail=True,
        welcome=not no_welcome,
    )
    if as_json:
        print_json({"id": engagement_id})
    else:
        welcomed = "The clients get no welcome mail." if no_welcome else "Welcome mails are queued."
        click.echo(
            f"Started engagement {engagement_id}. {welcomed} After a session: "
            f"python cli.py session done {engagement_id}"
        )


@engagement.command(name="list")
@click.option("--status", type=click.Choice(["active", "ended"]), help="Only these.")
@json_option
@with_app
def engagement_list(status, as_json):
    """List engagements, newest first, one line each.

    Example: python cli.py engagement list --status active
    """
    nothing = "No engagements yet." if status is None else f"No {status} engagements."
    print_rows(list_engagements(get_db(), status), as_json, engagement_line, nothing)


def engagement_line(row: dict) -> str:
    state = row["status"] if row["status"] == "active" else f"ended ({ending(row)})"
    title = f" {row['title']!r}" if row["title"] else ""
    return (
        f"{row['id']:>4}  {state:<24} {row['coach_name']} with {row['clients'] or 'nobody'}"
        f"{title}, {row['sessions_held']} session(s) held"
    )


@engagement.command(name="show")
@click.argument("engagement_id", type=int)
@json_option
@with_app
def engagement_show(engagement_id, as_json):
    """Show everything about one engagement.

    Example: python cli.py engagement show 1 --json
    """
    data = describe_engagement(get_db(), engagement_id)
    if as_json:
        print_json(data)
        return
    zone = settings().zone
    state = data["status"] + (f" ({ending(data)})" if data["end_reason"] else "")
    click.echo(f"Engagement {data['id']}{': ' + data['title'] if data['title'] else ''}")
    click.echo(f"  {data['kind']}, {state}")
    click.echo(f"  coach: {data['coach']['name']} <{data['coach']['email']}>")
    for member in data["members"]:
        click.echo(f"  client: {member['name']} <{member['email']}> ({member['status']})")
    for number, session in enumerate(data["sessions"], start=1):
        state = "held" if session["round"] else "planned"
        click.echo(f"  session {number}: {local(session['at'], zone)} ({state})")
        if session["round"]:
            round_ = session["round"]
            click.echo(
                f"    round {round_['id']}: {round_['status']}, "
                f"deadline {local(round_['deadline'], zone)}"
                + (f", outcome {round_['outcome']}" if round_["outcome"] else "")
            )
            for decision in round_["decisions"]:
                reason = decision["reason"] and f" ({REASON_LABELS[decision['reason']].lower()})"
                click.echo(
                    f"      {decision['party']}: {decision['choice'] or 'undecided'}{reason or ''}"
                )


def ending(engagement: dict) -> str:
    """Why an engagement ended, in words ('coach stopped'); --json keeps the code."""
    label = ENDING_LABELS[engagement["end_reason"]]
    return label[0].lower() + label[1:]


def session_number(engagement_id: int, session_id: int) -> int:
    """A session's number within its engagement (session 2 of Career), as `show` counts."""
    sessions = describe_engagement(get_db(), engagement_id)["sessions"]
    return next(n for n, s in enumerate(sessions, start=1) if s["id"] == session_id)


def engagement_name(engagement_id: int) -> str:
    title = describe_engagement(get_db(), engagement_id)["title"]
    return f"engagement {engagement_id}" + (f" ({title})" if title else "")


@engagement.command(name="reopen")
@click.argument("engagement_id", type=int)
@with_app
def engagement_reopen(engagement_id):
    """Make an ended engagement active again, for a client who came back.

    Example: python cli.py engagement reopen 1
    """
    reopen_engagement(get_db(), engagement_id, utcnow())
    click.echo(
        f"Engagement {engagement_id} is active again. Plan the next session with "
        f'python cli.py session add {engagement_id} --at "YYYY-MM-DD HH:MM"'
    )


@engagement.command(name="add-member")
@click.argument("engagement_id", type=int)
@click.argument("email")
@now_option
@json_option
@with_app
def engagement_add_member(engagement_id, email, now, as_json):
    """Add a client to a group; they decide from the next round on.

    They get the welcome mail the group got, and the planned session's invitation, if any.

    Example: python cli.py engagement add-member 4 dana@example.org
    """
    result = add_member(get_db(), engagement_id, email, now, welcome=True)
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"{result['email']} joined engagement {engagement_id}; "
            "they decide from the next round on."
        )


@engagement.command(name="remove-member")
@click.argument("engagement_id", type=int)
@click.argument("email")
@now_option
@json_option
@with_app
def engagement_remove_member(engagement_id, email, now, as_json):
    """Take a client out of a group now; their links in an open round stop working.

    A planned session comes off their calendar (they get its cancellation).

    Example: python cli.py engagement remove-member 4 dana@example.org
    """
    result = remove_member(get_db(), engagement_id, email, now, invite=True)
    if as_json:
        print_json(result)
        return
    click.echo(f"{result['email']} left engagement {engagement_id}.")
    if result["round_closed"] and result["outcome"] == "continue":
        click.echo("With that, the round closed and the group goes on.")
    elif result["round_closed"]:
        click.echo(f"With that, the round closed and the group ended ({ending(result)}).")


@click.group()
def session():
    """Plan, move and cancel sessions, and record the ones that took place."""


@session.command(name="add")
@click.argument("engagement_id", type=int)
@click.option(
    "--at",
    "at",
    required=True,
    type=click.DateTime(["%Y-%m-%d %H:%M"]),
    help="Start, in the practice's time zone: 'YYYY-MM-DD HH:MM'.",
)
@click.option("--minutes", type=click.IntRange(1, 1440), default=60, show_default=True)
@json_option
@with_app
def session_add(engagement_id, at, minutes, as_json):
    """Plan the next session; its round opens at the first tick after it ends.

    Example: python cli.py session add 1 --at "2026-12-09 10:00" --minutes 60
    """
    starts = at.replace(tzinfo=settings().zone)
    now = utcnow()
    if starts <= now:
        raise Invalid(
            f"{at:%Y-%m-%d %H:%M} is in the past; for a session that took place, use "
            f"`python cli.py session done {engagement_id}`."
        )
    session_id = plan_session(get_db(), engagement_id, starts, minutes, now, invite=True)
    if as_json:
        print_json({"session_id": session_id})
    else:
        click.echo(
            f"Planned session {session_number(engagement_id, session_id)} of "
            f"{engagement_name(engagement_id)} at {local(starts, settings().zone)}."
        )


@session.command(name="done")
@click.argument("engagement_id", type=int)
@click.option(
    "--minutes",
    type=click.IntRange(1, 1440),
    default=60,
    show_default=True,
    help="Length, when no session was planned.",
)
@now_option
@json_option
@with_app
def session_done(engagement_id, minutes, now, as_json):
    """Record that a session just took place and open its round now.

    Example: python cli.py session done 1
    """
    session_id, round_id = record_session_done(
        get_db(), engagement_id, now, settings().policy, minutes
    )
    if as_json:
        print_json({"session_id": session_id, "round_id": round_id})
    else:
        click.echo(
            f"Recorded session {session_number(engagement_id, session_id)} of "
            f"{engagement_name(engagement_id)} and opened round {round_id}; the decision mails "
            "are queued (python cli.py send delivers them)."
        )


@session.command(name="move")
@click.argument("session_id", type=int)
@click.option(
    "--at",
    "at",
    required=True,
    type=click.DateTime(["%Y-%m-%d %H:%M"]),
    help="The new start, in the practice's time zone: 'YYYY-MM-DD HH:MM'.",
)
@click.option(
    "--minutes", type=click.IntRange(1, 1440), help="A new length; unchanged when left out."
)
@now_option
@json_option
@with_app
def session_move(session_id, at, minutes, now, as_json):
    """Move a planned session to another time (not in the past).

    Example: python cli.py session move 12 --at "2026-12-16 10:00" --minutes 90
    """
    starts = at.replace(tzinfo=settings().zone)
    moved = move_session(get_db(), session_id, starts, now, minutes, invite=True)
    if as_json:
        print_json({key: moved[key] for key in ("id", "engagement_id", "starts_at", "minutes")})
    else:
        click.echo(
            f"Moved session {session_id} of engagement {moved['engagement_id']} to "
            f"{at:%Y-%m-%d %H:%M} ({moved['minutes']} minutes)."
        )


@session.command(name="cancel")
@click.argument("session_id", type=int)
@now_option
@with_app
def session_cancel(session_id, now):
    """Cancel a planned session; no round follows it.

    Example: python cli.py session cancel 12
    """
    cancelled = cancel_session(get_db(), session_id, now, invite=True)
    was = local(cancelled["starts_at"], settings().zone)
    click.echo(
        f"Cancelled session {session_id} of engagement {cancelled['engagement_id']} "
        f"(it was planned for {was}). Plan another with "
        f'python cli.py session add {cancelled["engagement_id"]} --at "YYYY-MM-DD HH:MM"'
    )


@click.command()
@click.argument("round_id", type=int)
@click.option("--choice", required=True, type=click.Choice(CHOICES))
@click.option("--reason", type=click.Choice(REASONS["coach"]), help="Why you stop.")
@click.option("--usefulness", type=WholeNumber(0, 10), help="How useful was it, 0-10.")
@click.option("--note", help="A note for yourself (at most 2,000 characters).")
@now_option
@with_app
def decide(round_id, choice, reason, usefulness, note, now):
    """Decide as the coach in a round.

    Example: python cli.py decide 3 --choice stop --reason cannot_help
    """
    result = record_decision(
        get_db(),
        get_coach_decision_id(get_db(), round_id),
        now,
        choice=choice,
        reason=reason,
        usefulness=usefulness,
        note=note,
        via={"via": "cli"},
    )
    verdict = result["verdict"]
    click.echo(f"Recorded your choice in round {round_id}: {choice}.")
    if verdict is None:
        click.echo("The round stays open until everyone has decided or the deadline passes.")
    elif verdict.outcome == "continue":
        click.echo("Everyone chose to continue: plan the next session with `session add`.")
    else:
        ended = ending({"end_reason": verdict.end_reason})
        click.echo(f"The round closed and the engagement ended ({ended}).")
