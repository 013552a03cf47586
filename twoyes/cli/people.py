"""The commands for people: `coach add`, `client add`, and each group's other commands."""

from __future__ import annotations

import click

from twoyes.cli.options import get_db, json_option, print_json, settings, with_app
from twoyes.cli.privacy import client_export, client_forget, coach_export, coach_forget
from twoyes.cli.reports import coach_link
from twoyes.errors import Invalid
from twoyes.people import add_person, clean_booking_url, set_booking_url, set_call_name
from twoyes.rules import LANGUAGES
from twoyes.times import utcnow

BOOKING_HELP = "Where clients pick a time for the next session: an https:// address."
SET_HELP = {
    "coach": "Change what is kept about a coach: the name mails greet them with, or the page "
    "where their clients pick a time for the next session (Cal.com, Calendly, ...).\n\n"
    'Example: python cli.py coach set bob@example.org --booking-url "https://cal.com/bob"\n\n'
    'No booking page any more: python cli.py coach set bob@example.org --booking-url ""',
    "client": "Change what is kept about a client: for now, the name mails greet them with."
    "\n\n"
    'Example: python cli.py client set anna@example.org --call-name "Annie"',
}


def booking_option(role: str, help_text: str):
    """--booking-url, for coaches only: clients have no booking page."""

    def apply(command):
        if role != "coach":
            return command
        return click.option("--booking-url", "booking_url", help=help_text)(command)

    return apply


PERSON_GROUPS = {
    "coach": "Add coaches, give them a link to their overview page, export their data, "
    "or forget them.",
    "client": "Add clients, export their data, or forget them.",
}


def person_commands(role: str) -> click.Group:
    @click.group(name=role, help=PERSON_GROUPS[role])
    def group():
        pass

    @group.command(
        name="add",
        help=f"Add a {role} with a name and an e-mail address.\n\n"
        "Mails greet them by --call-name, by default the first word of the name.\n\n"
        f'Example: python cli.py {role} add "Anna de Vries" anna@example.org --lang nl',
    )
    @click.argument("name")
    @click.argument("email")
    @click.option("--lang", type=click.Choice(LANGUAGES), help="Language of mails and pages.")
    @click.option("--call-name", help="The name mails greet them with (default: the first word).")
    @booking_option(role, BOOKING_HELP)
    @json_option
    @with_app
    def add(name, email, lang, call_name, as_json, booking_url=None):
        lang = lang or settings().language
        person_id = add_person(
            get_db(),
            role,
            name,
            email,
            lang,
            utcnow(),
            call_name=call_name,
            booking_url=booking_url,
        )
        if as_json:
            print_json({"id": person_id})
        else:
            click.echo(f"Added {role} {name} <{email.strip()}> (id {person_id}, language {lang}).")

    @group.command(name="set", help=SET_HELP[role])
    @click.argument("email")
    @click.option(
        "--call-name",
        required=role != "coach",
        help="The name mails greet them with; empty for the first word of their name.",
    )
    @booking_option(
        role, "Where clients pick a time for the next session (https://...); empty for none."
    )
    @json_option
    @with_app
    def set_(email, call_name, as_json, booking_url=None):
        if call_name is None and booking_url is None:
            raise Invalid("Say what to change: --call-name NAME or --booking-url URL.")
        clean_booking_url(booking_url)  # refused before anything changes
        changed = {}
        if call_name is not None:
            person = set_call_name(get_db(), role, email, call_name, utcnow())
            changed["call_name"] = person["call_name"]
            if not as_json:
                click.echo(f"Mails greet {person['name']} as {person['call_name']} from now on.")
        if booking_url is not None:
            person = set_booking_url(get_db(), email, booking_url, utcnow())
            changed["booking_url"] = person["booking_url"]
            if not as_json and person["booking_url"]:
                click.echo(
                    f"Clients of {person['name']} pick the next session at "
                    f"{person['booking_url']} from now on."
                )
            elif not as_json:
                click.echo(f"{person['name']} has no booking address any more.")
        if as_json:
            print_json({"id": person["id"], **changed})

    return group


coach_group = person_commands("coach")
coach_group.add_command(coach_link)
coach_group.add_command(coach_export)
coach_group.add_command(coach_forget)
client_group = person_commands("client")
client_group.add_command(client_export)
client_group.add_command(client_forget)
