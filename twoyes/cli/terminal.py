"""What a coach reads on the terminal: `status` as tables (rich), `report` as plain lines.

The command line speaks English. Times are shown in the practice's time zone.
On a terminal the tables get colour and its width; piped or under cron they
are plain text, 100 columns wide.
"""

from __future__ import annotations

import io
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from twoyes.labels import REPORT_ENDING_LABELS
from twoyes.times import format_local

if TYPE_CHECKING:  # rich is loaded by `status` alone: other commands, tick too, need none of it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

PLAIN_WIDTH = 100


def render_status(
    status: dict,
    now: datetime,
    zone: ZoneInfo,
    *,
    who: str,
    config_file: Path | str,
    tty: bool = False,
) -> str:
    """The parts of `status` as text: open rounds, drifting engagements, failed mail and
    mail that waits (with `config_file`, where a missing mail server is set); a line for
    each part that is empty."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.text import Text

    width = shutil.get_terminal_size((PLAIN_WIDTH, 24)).columns if tty else PLAIN_WIDTH
    console = Console(
        file=io.StringIO(), width=width, force_terminal=tty, no_color=not tty, highlight=False
    )
    # Names and errors are data, never rich markup: every cell is a Text.
    console.print(Text(f"Status for {who} at {local(now, zone)} ({zone.key})", style="bold"))
    console.print()

    if status["open_rounds"]:
        table = _table(
            console,
            "Open rounds: who still has to decide",
            ("Round", "Engagement", "Still to decide", "Deadline"),
        )
        for row in status["open_rounds"]:
            deadline = local(row["deadline_at"], zone)
            if row["overdue"]:
                deadline = Text.assemble(deadline, "\n", ("overdue", "bold red"))
            table.add_row(
                Text(str(row["round_id"])),
                _engagement(row, with_coach=who == "the practice"),
                Text(row["undecided"] or "nobody (closes at the next tick)"),
                Text(deadline) if isinstance(deadline, str) else deadline,
            )
        console.print(table)
        console.print("  Decide: python cli.py decide ROUND --choice continue|stop", markup=False)
    else:
        console.print("No open rounds: nobody has to decide anything.")
    console.print()

    if status["drifting"]:
        table = _table(
            console,
            "Going quiet: nothing held or planned for a while",
            ("Engagement", "Idle", "Ends as idle on"),
        )
        for row in status["drifting"]:
            table.add_row(
                _engagement(row, with_coach=who == "the practice"),
                Text(f"{row['idle_days']} days"),
                Text(local(row["ends_at"], zone, with_time=False)),
            )
        console.print(table)
        console.print(
            '  Plan a session: python cli.py session add ID --at "YYYY-MM-DD HH:MM"', markup=False
        )
    else:
        console.print("No engagement is going quiet.")
    console.print()

    if status["failed_mails"]:
        table = _table(
            console, "Mail that could not be delivered", ("Mail", "Kind", "To", "Last error")
        )
        for row in status["failed_mails"]:
            table.add_row(
                *(
                    Text(str(row[key] or ""))
                    for key in ("mail_id", "kind", "to_email", "last_error")
                )
            )
        console.print(table)
        console.print("  Send it again: python cli.py outbox retry MAIL")
    else:
        console.print("No failed mail.")
    console.print()

    waiting_lines = _waiting_mail(status["waiting_mail"], zone, config_file)
    if waiting_lines:
        console.print(Text("Mail waiting to be delivered", style="bold"))
        for line in waiting_lines:
            console.print(Padding(Text(line), (0, 0, 0, 2)))  # wrapped lines keep the indent
    else:
        console.print("No mail is waiting.")
    text = console.file.getvalue()
    # Plain text for cron mail and pipes: no padding at the ends of lines.
    return text if tty else "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _waiting_mail(waiting: dict, zone: ZoneInfo, config_file: Path | str) -> list[str]:
    """Why the mail that is not delivered yet waits: one line a reason, none when none waits."""
    total = waiting["queued"] + waiting["retrying"] + waiting["sending"]
    if total and waiting["no_mail_server"]:
        return [
            f"{total} mail(s) wait because no mail server is set: set MAIL_SERVER in "
            f"{config_file} (or TWOYES_MAIL_SERVER), and the next send or tick delivers them."
        ]
    lines = []
    if waiting["retrying"]:
        lines.append(
            f"{waiting['retrying']} mail(s) could not be delivered yet and will be retried, "
            f"the next at {local(waiting['next_attempt_at'], zone)}; "
            f"the last error: {waiting['last_error']}"
        )
    if waiting["queued"]:
        lines.append(f"{waiting['queued']} mail(s) are queued for the next send or tick.")
    if waiting["sending"]:
        lines.append(
            f"{waiting['sending']} mail(s) are being sent by a run (one that stopped is "
            "taken over by a later run)."
        )
    return lines


def report_lines(report: dict, *, who: str, zone: ZoneInfo) -> list[str]:
    """`practice_report` as plain English lines."""
    lines = [
        f"Report for {who} since {local(report['since'], zone, with_time=False)}",
        "",
        f"Engagements started: {report['engagements_started']}",
        f"Engagements ended:   {report['engagements_ended']}",
        "",
        "Sessions per ended engagement:",
    ]
    per = report["sessions_per_ended_engagement"]
    lines += [
        f"  {n} session{'s' if n != 1 else ''}: {count} engagement{'s' if count != 1 else ''}"
        for n, count in per.items()
    ] or ["  none ended yet"]
    lines += ["", "Why engagements ended:"]
    reasons = report["end_reasons"]
    lines += [
        f"  {label}: {reasons[key]}"
        for key, label in REPORT_ENDING_LABELS.items()
        if key in reasons
    ] or ["  none ended yet"]
    lines += ["", "Average usefulness by session number (clients' ratings, 0-10):"]
    lines += [
        f"  session {n}: {values['average']:.2f} ({values['ratings']} "
        f"rating{'s' if values['ratings'] != 1 else ''})"
        for n, values in report["usefulness_by_session"].items()
    ] or ["  no ratings yet"]
    lines += ["", "Decided before the reminder (closed rounds):"]
    for role, label in (("coach", "coach"), ("client", "clients")):
        figures = report["decided_before_reminder"][role]
        if figures["rounds"]:
            lines.append(
                f"  {label}: {figures['decided_before_reminder']} of {figures['rounds']} "
                f"({figures['share']:.0%})"
            )
        else:
            lines.append(f"  {label}: no closed rounds yet")
    return lines


def local(moment: datetime | str, zone: ZoneInfo, *, with_time: bool = True) -> str:
    """'Tue 8 Dec 2026 10:00' in the practice's time zone (English, whatever the locale)."""
    return format_local(moment, "EEE d MMM y HH:mm" if with_time else "EEE d MMM y", zone, "en")


def _table(console: Console, title: str, headers: tuple[str, ...]) -> Table:
    """A table under its own heading (a table's title would wrap at the table's width)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console.print(Text(title, style="bold"))
    table = Table(box=box.SIMPLE_HEAD)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _engagement(row: dict, *, with_coach: bool) -> Text:
    from rich.text import Text

    name = f"{row['engagement_id']}"
    if row["title"]:
        name += f" {row['title']}"
    text = f"{name}\nwith {row['clients'] or 'nobody'}"
    if with_coach:
        text += f"\ncoach {row['coach_email']}"
    return Text(text)
