"""Which language a page speaks, and the words and dates its templates use.

A page speaks the language of the person whose token opened it (the route
sets `g.lang`); a page without a token follows the browser, then the
practice's LANGUAGE. Mails are rendered with the same filters, inside
`force_locale` (see mail/delivery.py).
"""

from __future__ import annotations

from flask import Flask, current_app, g, has_request_context, request
from flask_babel import Babel, get_locale, gettext

from twoyes.errors import TwoyesError
from twoyes.labels import ENDING_LABELS, REASON_LABELS
from twoyes.mail.wording import (
    bound_gettext,
    format_date,
    format_day,
    format_when,
    invitation_paragraphs,
    outcome_paragraphs,
    welcome_paragraphs,
)
from twoyes.rules import LANGUAGES
from twoyes.settings import Settings


def init_language(app: Flask, settings: Settings) -> None:
    app.config["BABEL_DEFAULT_LOCALE"] = settings.language
    app.config["BABEL_DEFAULT_TIMEZONE"] = settings.zone.key
    Babel(app, locale_selector=select_language)
    app.context_processor(bound_gettext)
    app.jinja_env.filters["when"] = format_when
    app.jinja_env.filters["day"] = format_day
    app.jinja_env.filters["date"] = format_date
    app.jinja_env.globals["REASON_LABELS"] = REASON_LABELS
    app.jinja_env.globals["ENDING_LABELS"] = ENDING_LABELS
    app.jinja_env.globals["outcome_paragraphs"] = outcome_paragraphs
    app.jinja_env.globals["welcome_paragraphs"] = welcome_paragraphs
    app.jinja_env.globals["invitation_paragraphs"] = invitation_paragraphs
    app.jinja_env.globals["current_language"] = lambda: str(get_locale() or "en")
    # Heads every page and signs every mail (templates say "twoyes" while it is unset).
    app.jinja_env.globals["practice_name"] = settings.practice_name


def select_language() -> str:
    """The token owner's language; else what the browser asks for; else the practice's."""
    if "lang" in g:
        return g.lang
    default = current_app.extensions["twoyes"].language
    if has_request_context():
        return request.accept_languages.best_match(LANGUAGES) or default
    return default


def translate_error(error: TwoyesError) -> str:
    """A domain error in the reader's language (sentences the catalogue knows)."""
    return " ".join(gettext(part) for part in error.parts)
