"""The commands for people: `coach add`, `client add`, and each group's other commands."""

from __future__ import annotations

import click

from twoyes.cli.options import get_db, json_option, print_json, settings, with_app
from twoyes.cli.privacy import client_export, client_forget, coach_export, coach_forget
from twoyes.cli.reports import coach_link
from twoyes.people import add_person, set_call_name
from twoyes.rules import LANGUAGES
from twoyes.times import utcnow

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
    @json_option
    @with_app
    def add(name, email, lang, call_name, as_json):
        lang = lang or settings().language
        person_id = add_person(get_db(), role, name, email, lang, utcnow(), call_name=call_name)
        if as_json:
            print_json({"id": person_id})
        else:
            click.echo(f"Added {role} {name} <{email.strip()}> (id {person_id}, language {lang}).")

    @group.command(
        name="set",
        help=f"Change what is kept about a {role}: for now, the name mails greet them with.\n\n"
        f'Example: python cli.py {role} set anna@example.org --call-name "Annie"',
    )
    @click.argument("email")
    @click.option(
        "--call-name",
        required=True,
        help="The name mails greet them with; empty for the first word of their name.",
    )
    @json_option
    @with_app
    def set_(email, call_name, as_json):
        person = set_call_name(get_db(), role, email, call_name, utcnow())
        if as_json:
            print_json({"id": person["id"], "call_name": person["call_name"]})
        else:
            click.echo(f"Mails greet {person['name']} as {person['call_name']} from now on.")

    return group


coach_group = person_commands("coach")
coach_group.add_command(coach_link)
coach_group.add_command(coach_export)
coach_group.add_command(coach_forget)
client_group = person_commands("client")
client_group.add_command(client_export)
client_group.add_command(client_forget)
