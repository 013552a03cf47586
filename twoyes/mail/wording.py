"""The words built in code: subjects, the outcome's sentences, dates as people write them.

Mails speak the language of their reader (delivery renders each mail inside
`force_locale`); pages use the same functions through web/i18n.py. Every
time is shown in the practice's TIMEZONE. The English text is the msgid;
translations/nl holds the Dutch, written by hand, and `make test` fails when
a sentence has none.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from flask_babel import get_locale, get_translations, gettext, ngettext
from jinja2 import pass_eval_context
from markupsafe import Markup

from twoyes.errors import N_
from twoyes.invitations import build_calendar
from twoyes.times import format_local

SUBJECTS = {
    "decision": N_("Another session?"),
    "reminder": N_("A reminder: another session?"),
    "outcome_continue": N_("We continue"),
    "outcome_stop": N_("Thank you, and welcome back any time"),
    # The coach's own mail when an engagement ends: about the work, not a goodbye to them.
    "outcome_stop_coach": N_("%(title)s has ended"),
    "outcome_stop_coach_untitled": N_("Your engagement with %(client_names)s has ended"),
    "welcome_back": N_("%(client_name)s would like a new session"),
    "sign_in": N_("Your link to your overview"),
    "welcome": N_("Welcome: every session can be the last"),
    "welcome_coach": N_("%(title)s has started"),
    "welcome_coach_untitled": N_("Your engagement with %(client_names)s has started"),
    "invitation_planned": N_("Session planned: %(when)s"),
    "invitation_moved": N_("Session moved to %(when)s"),
    "invitation_cancelled": N_("Session cancelled: %(when)s"),
    "invitation_ended": N_("Session cancelled: %(when)s"),
    "invitation_joined": N_("Session planned: %(when)s"),
    "invitation_left": N_("Session cancelled: %(when)s"),
    "reply_recorded": N_("Your answer is recorded"),
    "reply_unclear": N_("We could not read your answer"),
    "reply_refused": N_("About your reply"),
    "reply_forward": N_("A reply from %(sender_name)s"),
}

END_SENTENCES = {
    "client": {
        "client_stopped": N_("You chose to stop. Thank you for letting us know."),
        "coach_stopped": N_(
            "%(coach_name)s decided that another session is not the most useful next step for now."
        ),
        "undecided": N_(
            "We did not hear from everyone by the deadline, and we never continue without a "
            "yes, so this was our last session for now."
        ),
        "idle": N_(
            "It has been a while since our last session, so we close this engagement for now."
        ),
        "members_left": N_("Too few members chose to continue, so the group ends here."),
    },
    "coach": {
        "client_stopped": N_("%(client_names)s chose to stop."),
        "coach_stopped": N_("You chose to stop."),
        "undecided": N_("Not everyone answered by the deadline, so the engagement has ended."),
        "idle": N_("Nothing was held or planned for a long while, so the engagement has ended."),
        "members_left": N_("Too few members chose to continue, so the group has ended."),
    },
}

# Said to a client after the coach's stop, only when the coach gave this reason: the
# approach does not fit the question. Another reason, or none, gets no guess at why.
NOT_ABOUT_YOU = N_("That is about the fit of the approach, not about you.")


def bound_gettext(translations=None) -> dict:
    """The templates' gettext and ngettext, bound to one language's catalogue.

    Flask-Babel's own look the locale and the catalogue up again for every
    sentence: half the time of a page, a third of a mail. As a context
    processor this runs as render_template starts, so a page's binding still
    follows g.lang and `force_locale`; delivery binds once per language of a
    batch and passes these in. The functions keep Jinja's newstyle rules
    (placeholders escaped, `%` always applied), so every page and mail reads
    as before.
    """
    translations = translations or get_translations()
    find, find_plural = translations.ugettext, translations.ungettext

    @pass_eval_context
    def gettext_(eval_ctx, string: str, /, **variables) -> str:
        return _newstyle(eval_ctx, find(string), variables)

    @pass_eval_context
    def ngettext_(eval_ctx, singular: str, plural: str, num: int, /, **variables) -> str:
        variables.setdefault("num", num)
        return _newstyle(eval_ctx, find_plural(singular, plural, num), variables)

    return {"_": gettext_, "gettext": gettext_, "ngettext": ngettext_}


def _newstyle(eval_ctx, text: str, variables: dict) -> str:
    """Jinja's newstyle gettext result: escaped in HTML, always %-formatted (`%%` is `%`)."""
    if eval_ctx.autoescape:
        # Our own catalogue's sentence, trusted as Jinja trusts it; the variables get escaped.
        text = Markup(text)  # noqa: S704  # nosec B704
    if not variables and "%" not in text:
        return text  # what `text % {}` gives, without the cost of formatting
    return text % variables


def format_when(text: str | None) -> str:
    """'Tuesday 9 December at 10:00' / 'dinsdag 9 december om 10:00', in the practice's zone;
    with the year ('Tuesday 9 December 2025 at 10:00') when it is not this year."""
    if not text:
        return ""
    if _this_year(text):
        return _local(text, gettext("EEEE d MMMM 'at' HH:mm"))
    return _local(text, gettext("EEEE d MMMM y 'at' HH:mm"))


def format_day(text: str | None) -> str:
    """'Tuesday 9 December' / 'dinsdag 9 december', in the practice's zone; with the year
    when it is not this year."""
    if not text:
        return ""
    if _this_year(text):
        return _local(text, gettext("EEEE d MMMM"))
    return _local(text, gettext("EEEE d MMMM y"))


def format_date(moment: datetime | str | None) -> str:
    """'27 November 2026' / '27 november 2026', in the practice's zone."""
    if not moment:
        return ""
    return _local(moment, gettext("d MMMM y"))


def _local(moment: datetime | str, pattern: str) -> str:
    """A stored instant in the practice's zone and the reader's words."""
    return format_local(moment, pattern, current_app.extensions["twoyes"].zone, get_locale())


def _this_year(moment: datetime | str) -> bool:
    """Whether an instant falls in this year on the practice's wall clock: a date a person
    reads names its year only when it is another one (a mail is worded as it is sent)."""
    tz = current_app.extensions["twoyes"].zone
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(tz).year == datetime.now(tz).year


def subject_for(kind: str, context: dict) -> str:
    if kind == "outcome":
        kind = "outcome_stop" if context.get("you_left") else f"outcome_{context['outcome']}"
        if kind == "outcome_stop" and context.get("role") == "coach":
            kind = "outcome_stop_coach" if context.get("title") else "outcome_stop_coach_untitled"
    elif kind == "welcome" and context.get("role") == "coach":
        kind = "welcome_coach" if context.get("title") else "welcome_coach_untitled"
    elif kind == "invitation":
        kind = f"invitation_{context['change']}"
    return gettext(
        SUBJECTS[kind],
        client_name=context.get("client_name", ""),
        client_names=context.get("client_names") or "",
        title=context.get("title") or "",
        sender_name=context.get("sender_name") or context.get("sender_email") or "",
        when=format_when(context.get("starts_at")),
    )


def welcome_paragraphs(context: dict) -> list[str]:
    """What a client reads when their engagement starts (and their coach, as confirmation):
    every session can be the last, what happens after each one, and that coming back later
    is always possible."""
    names = {"coach_name": context["coach_name"], "title": context.get("title") or ""}
    days = current_app.extensions["twoyes"].policy.decision_days
    if not context["group"]:
        return [
            gettext("Welcome! %(coach_name)s is your coach for %(title)s.", **names)
            if context.get("title")
            else gettext("Welcome! %(coach_name)s is your coach.", **names),
            gettext(
                "We work in a simple way: every session can be the last. After each session, "
                "you and %(coach_name)s each decide whether another session would be useful, "
                "so nobody sits through sessions that no longer help.",
                **names,
            ),
            ngettext(
                "After each session you get one mail with two choices: another session would "
                "be useful, or you have what you need for now. Please answer within %(num)s "
                "day; if we hear nothing by then, we stop: we never continue without a yes.",
                "After each session you get one mail with two choices: another session would "
                "be useful, or you have what you need for now. Please answer within %(num)s "
                "days; if we hear nothing by then, we stop: we never continue without a yes.",
                days,
            ),
            gettext(COMING_BACK),
        ]
    return [
        gettext("Welcome to %(title)s, a group with %(coach_name)s as facilitator.", **names)
        if context.get("title")
        else gettext(
            "Welcome! You take part in a group with %(coach_name)s as facilitator.", **names
        ),
        gettext(
            "We work in a simple way: every session can be the last. After each session, each "
            "member decides for themselves whether another session is useful, and "
            "%(coach_name)s decides too. So the group may turn out shorter than you expect, "
            "and that is fine: nobody has to sit through sessions that no longer help.",
            **names,
        ),
        ngettext(
            "After each session you get one mail with two choices: another session would be "
            "useful, or you have what you need for now. Please answer within %(num)s day; if "
            "we hear nothing by then, we take it that you stop.",
            "After each session you get one mail with two choices: another session would be "
            "useful, or you have what you need for now. Please answer within %(num)s days; if "
            "we hear nothing by then, we take it that you stop.",
            days,
        ),
        ngettext(
            "The group goes on as long as %(coach_name)s and at least %(num)s member choose to "
            "continue. Whoever stops leaves the group and the others carry on; when fewer than "
            "%(num)s want to go on, the group ends there.",
            "The group goes on as long as %(coach_name)s and at least %(num)s members choose "
            "to continue. Whoever stops leaves the group and the others carry on; when fewer "
            "than %(num)s want to go on, the group ends there.",
            context["min_members"],
            **names,
        ),
        gettext(COMING_BACK),
    ]


COMING_BACK = N_(
    "Stopping is a good outcome: being able to go on by yourself is what coaching is about. "
    "And if you would like to come back later, you are always welcome."
)


def invitation_paragraphs(context: dict) -> list[str]:
    """What changed about a session, for the mail its calendar invitation rides in."""
    when = format_when(context["starts_at"])
    change = context["change"]
    if change in ("planned", "joined"):
        first = ngettext(
            "The next session is planned: %(when)s, %(num)s minute.",
            "The next session is planned: %(when)s, %(num)s minutes.",
            context["minutes"],
            when=when,
        )
    elif change == "moved":
        first = ngettext(
            "The session of %(was)s has moved to %(when)s (%(num)s minute).",
            "The session of %(was)s has moved to %(when)s (%(num)s minutes).",
            context["minutes"],
            was=format_when(context["was"]),
            when=when,
        )
    elif change == "cancelled":
        first = gettext("The session of %(when)s is cancelled.", when=when)
    elif change == "left":
        first = gettext(
            "As you left the group, the session of %(when)s comes off your calendar.", when=when
        )
    else:
        first = gettext(
            "The session of %(when)s will not take place, as the engagement has ended.",
            when=when,
        )
    if context["method"] == "CANCEL":
        return [first, gettext("The cancellation for your calendar is attached.")]
    return [first, gettext("The invitation for your calendar is attached.")]


def calendar_summary(context: dict) -> str:
    """The calendar entry's title, in the reader's words."""
    if context["role"] == "coach":
        names = context.get("client_names") or ""
        if context.get("title"):
            return gettext("%(title)s: session with %(names)s", title=context["title"], names=names)
        return gettext("Session with %(names)s", names=names)
    if context.get("title"):
        return gettext(
            "%(title)s: session with %(names)s", title=context["title"], names=context["coach_name"]
        )
    return gettext("Session with %(names)s", names=context["coach_name"])


def calendar_of(mail: dict) -> str | None:
    """An invitation mail's iCalendar text; None for every other mail."""
    if mail["kind"] != "invitation":
        return None
    context = mail["context"]
    zone = current_app.extensions["twoyes"].zone
    return build_calendar(context, zone, calendar_summary(context))


def outcome_paragraphs(context: dict) -> list[str]:
    """The body of an outcome mail as plain sentences, shared by its text and HTML parts."""
    lines = _outcome_lines(context)
    if context["role"] == "coach":
        for rating in context.get("low_usefulness") or ():
            lines.append(
                gettext(
                    "%(name)s rated this session %(n)s out of 10: a good moment to ask what "
                    "would be more useful.",
                    name=rating["name"],
                    n=rating["usefulness"],
                )
            )
    return lines


def _outcome_lines(context: dict) -> list[str]:
    role, group = context["role"], context["group"]
    names = {
        "coach_name": context["coach_name"],
        "client_names": context.get("client_names") or gettext("Your client"),
        "title": context.get("title") or "",
        "total": context.get("members_total", 0),
    }
    continuing = context.get("members_continuing", 0)
    if context["outcome"] == "continue":
        if context.get("you_left"):
            first = (
                gettext("You chose to stop. Thank you for letting us know, and for taking part.")
                if context.get("my_choice") == "stop"
                else gettext(
                    "We did not hear from you by the deadline, so we take it that the last "
                    "session was your last one with this group. Thank you for taking part."
                )
            )
            return [
                first,
                gettext(
                    "The group goes on without you. If you would like to join again later, "
                    "you are welcome back any time."
                ),
            ]
        if role == "coach":
            if group:
                together = (
                    gettext(
                        "%(title)s goes on: you and the group chose to continue. "
                        "Please plan the next session.",
                        **names,
                    )
                    if context.get("title")
                    else gettext(
                        "You and the group chose to continue. Please plan the next session."
                    )
                )
                return [
                    together,
                    ngettext(
                        "%(num)s of %(total)s members continues.",
                        "%(num)s of %(total)s members continue.",
                        continuing,
                        **names,
                    ),
                ]
            return [
                gettext(
                    "You and %(client_names)s chose to continue. Please plan the next session.",
                    **names,
                )
            ]
        if group:
            # Never how many chose what: in a group of two that would tell each the other's.
            return [
                gettext("The group goes on."),
                gettext("%(coach_name)s will let you know when the next session is.", **names),
            ]
        return [
            gettext(
                "You and %(coach_name)s both chose to continue, so there will be another session.",
                **names,
            ),
            gettext("Use the link below to choose a moment that suits you.")
            if context.get("booking_url")
            else gettext("%(coach_name)s will be in touch to plan it.", **names),
        ]
    if role == "coach":
        ending = END_SENTENCES["coach"][context["end_reason"]]
        return [
            gettext(ending, **names),
            gettext("Each client got a mail with a link to come back whenever they like."),
        ]
    return _client_ending(context, names)


def _client_ending(context: dict, names: dict) -> list[str]:
    """Why a client's sessions ended, in their terms, and the way back."""
    reason = context["end_reason"]
    come_back = gettext("You are welcome back any time: the link below lets your coach know.")
    if reason == "undecided" and context.get("my_choice") == "continue":
        # R4/R5: a client who said yes while the coach stayed silent hears whose answer it was.
        return [
            gettext(
                "You chose to continue, but the answer of %(coach_name)s did not come before "
                "the deadline. We never continue without a yes from everyone, so no next "
                "session is planned for now.",
                **names,
            ),
            gettext(
                "If you would like one, you can ask for a new session with the link below: "
                "%(coach_name)s gets a mail to plan it with you.",
                **names,
            ),
        ]
    if reason == "undecided" and not context.get("my_choice") and not context["group"]:
        lines = [
            gettext(
                "We did not hear from you by the deadline, and we never continue without a yes, "
                "so this was our last session for now."
            )
        ]
    else:
        ending = END_SENTENCES["client"][reason]
        lines = [gettext(ending, **names)]
    if reason == "coach_stopped" and context.get("coach_reason") == "cannot_help":
        lines.append(gettext(NOT_ABOUT_YOU))
    if context.get("my_reason") == "on_my_own":
        lines.append(
            gettext("Going on by yourself is the best outcome coaching can have. We wish you well.")
        )
    lines.append(come_back)
    return lines
