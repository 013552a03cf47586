"""The compiled translations: present and current, or twoyes does not start.

The Makefile compiles each translations/<lang>/LC_MESSAGES/messages.po into
its .mo (they are never committed). A checkout used without `make` would
otherwise send English to Dutch clients without a word, so every entry point
refuses to start with a sentence that says how to build them.
"""

from __future__ import annotations

from pathlib import Path

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"


def stale_catalogues(translations: Path = TRANSLATIONS) -> list[str]:
    """The languages whose compiled catalogue is missing or older than its .po."""
    stale = []
    for source in sorted(translations.glob("*/LC_MESSAGES/messages.po")):
        compiled = source.with_suffix(".mo")
        if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
            stale.append(source.parent.parent.name)
    return stale


def catalogue_problem(translations: Path = TRANSLATIONS) -> str | None:
    """One sentence naming the languages to build, or None when all are current."""
    stale = stale_catalogues(translations)
    if not stale:
        return None
    return (
        f"The translations for {', '.join(stale)} are not compiled, or older than their "
        "messages.po; run `make translations` (or `make install`) in the twoyes folder."
    )
