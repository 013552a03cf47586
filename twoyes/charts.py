"""The report's charts: SVG and the same figures as tables, from a `reports.practice_report` dict.

Drawn for `python cli.py report --html FILE` (one self-contained file a coach
opens from disk or prints) and for the coach's overview page, so they are
plain SVG work here in the core: the caller passes the reader's gettext and
locale. Charts are drawn by pygal and set inline: no script, no remote font
or stylesheet, no comment with a URL in it. On the web the pages'
Content-Security-Policy allows no inline style, so each chart's <style>
carries the response's nonce.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygal
from babel.numbers import format_decimal, format_percent
from markupsafe import Markup
from pygal.style import Style

from twoyes.labels import REPORT_ENDING_LABELS

# pygal hooks into imports for its map plugins with an old-style finder, which makes every
# failed import anywhere in the process warn (ImportWarning). We draw no maps.
sys.meta_path[:] = [
    finder for finder in sys.meta_path if not isinstance(finder, pygal.PluginImportFixer)
]

STYLESHEET = Path(__file__).resolve().parent.parent / "static" / "style.css"

ACCENT, STOP, MUTED = "#1d5c4d", "#7a3b12", "#52606d"

CHART_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#d9d4c7",
    opacity="1",
    opacity_hover="1",
    colors=(ACCENT, STOP, MUTED),
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    value_font_size=13,
    title_font_size=15,
    tooltip_font_size=13,
    value_colors=("#1f2933",),
)


def _whole_numbers(largest: int) -> list[int]:
    """Guides at whole numbers for a count axis (pygal would draw 0.2, 0.4, ...)."""
    step = max(1, -(-largest // 8))
    return list(range(0, largest + step, step))


@dataclass(frozen=True)
class Words:
    """The reader's language: its gettext, and its locale for numbers."""

    gettext: Callable[..., str]
    locale: str

    def decimal(self, value) -> str:
        return format_decimal(value, locale=self.locale)

    def percent(self, value) -> str:
        return format_percent(value, locale=self.locale)


def report_charts(
    report: dict, gettext: Callable[..., str], locale: str, nonce: str | None = None
) -> list[dict]:
    """One dict per chart: title, svg (None when there is nothing to draw), and the same
    figures as a table (head, rows) for reading aloud and for print."""
    words = Words(gettext, str(locale))
    return [
        _sessions_chart(report, nonce, words),
        _reasons_chart(report, nonce, words),
        _usefulness_chart(report, nonce, words),
        _reminder_chart(report, nonce, words),
    ]


def report_stylesheet() -> Markup:
    """Our own stylesheet from the repository, for a report page that stands alone."""
    return Markup(STYLESHEET.read_text(encoding="utf-8"))  # noqa: S704  # nosec B704


def _new_chart(kind, title: str, nonce: str | None, words: Words, **config):
    settings = {
        "style": CHART_STYLE,
        "width": 640,
        "height": 300,
        "show_legend": False,
        "print_values": True,
        "print_values_position": "top",
        "truncate_label": -1,
        "value_formatter": words.decimal,
    }
    # No script (pygal's tooltips load JavaScript from its web site) and no XML prologue.
    settings |= config | {"js": [], "disable_xml_declaration": True}
    chart = kind(**settings)
    chart.add_xml_filter(_self_contained(title, nonce))
    return chart


def _self_contained(title: str, nonce: str | None):
    """A pygal xml filter: no script, no comments (they name pygal's web site), no style
    attribute (the page's policy allows none), a title, and the nonce on the <style>."""

    def clean(root):
        for parent in list(root.iter()):
            for child in list(parent):
                if not isinstance(child.tag, str) or _local(child.tag) == "script":
                    parent.remove(child)
        for element in root.iter():
            element.attrib.pop("style", None)
            if _local(element.tag) == "style" and nonce:
                element.set("nonce", nonce)
        for element in root:
            if _local(element.tag) == "title":
                element.text = title
                break
        root.set("role", "img")
        return root

    return clean


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _svg(chart) -> Markup:
    # pygal builds the SVG with ElementTree, which escapes every label and value.
    return Markup(chart.render(is_unicode=True))  # noqa: S704  # nosec B704


def _sessions_chart(report: dict, nonce: str | None, words: Words) -> dict:
    gettext = words.gettext
    title = gettext("Sessions per ended engagement")
    counts = {int(n): count for n, count in report["sessions_per_ended_engagement"].items()}
    numbers = list(range(min(counts, default=0), max(counts, default=0) + 1))
    svg = None
    if counts:
        chart = _new_chart(
            pygal.Bar,
            title,
            nonce,
            words,
            x_title=gettext("Sessions held"),
            y_title=gettext("Engagements"),
        )
        chart.x_labels = [str(n) for n in numbers]
        chart.y_labels = _whole_numbers(max(counts.values()))
        chart.add(gettext("Engagements"), [counts.get(n, 0) for n in numbers])
        svg = _svg(chart)
    return {
        "title": title,
        "svg": svg,
        "head": (gettext("Sessions held"), gettext("Engagements")),
        "rows": [(str(n), str(counts.get(n, 0))) for n in numbers] if counts else [],
    }


def _reasons_chart(report: dict, nonce: str | None, words: Words) -> dict:
    gettext = words.gettext
    title = gettext("Why engagements ended")
    reasons = report["end_reasons"]
    labels = [gettext(label) for label in REPORT_ENDING_LABELS.values()]
    svg = None
    if reasons:
        chart = _new_chart(pygal.HorizontalBar, title, nonce, words, height=360)
        chart.x_labels = labels
        chart.y_labels = _whole_numbers(max(reasons.values()))
        colors = {"client_on_my_own": ACCENT, "client_not_useful": STOP}
        chart.add(
            gettext("Engagements"),
            [
                {"value": reasons.get(key, 0), "color": colors.get(key, MUTED)}
                for key in REPORT_ENDING_LABELS
            ],
        )
        svg = _svg(chart)
    return {
        "title": title,
        "svg": svg,
        "head": (gettext("Reason"), gettext("Engagements")),
        "rows": [
            (label, str(reasons.get(key, 0)))
            for key, label in zip(REPORT_ENDING_LABELS, labels, strict=True)
        ]
        if reasons
        else [],
    }


def _usefulness_chart(report: dict, nonce: str | None, words: Words) -> dict:
    gettext = words.gettext
    title = gettext("How useful sessions were, by session number")
    by_session = {int(n): values for n, values in report["usefulness_by_session"].items()}
    svg = None
    if by_session:
        chart = _new_chart(
            pygal.Bar,
            title,
            nonce,
            words,
            range=(0, 10),
            x_title=gettext("Session"),
            y_title=gettext("Average usefulness (0-10)"),
        )
        chart.x_labels = [str(n) for n in by_session]
        chart.add(gettext("Average"), [values["average"] for values in by_session.values()])
        svg = _svg(chart)
    return {
        "title": title,
        "svg": svg,
        "head": (gettext("Session"), gettext("Average usefulness (0-10)"), gettext("Ratings")),
        "rows": [
            (str(n), words.decimal(values["average"]), str(values["ratings"]))
            for n, values in by_session.items()
        ],
        "note": gettext("Clients' own ratings, given with their decision after each session."),
    }


def _reminder_chart(report: dict, nonce: str | None, words: Words) -> dict:
    gettext = words.gettext
    title = gettext("Decided before the reminder")
    parties = {"coach": gettext("Coach"), "client": gettext("Clients")}
    shares = report["decided_before_reminder"]
    known = {role: figures for role, figures in shares.items() if figures["rounds"]}
    svg = None
    if known:
        chart = _new_chart(
            pygal.Bar,
            title,
            nonce,
            words,
            range=(0, 100),
            y_title=gettext("Share of rounds"),
            value_formatter=lambda value: words.percent(value / 100),
        )
        chart.x_labels = [parties[role] for role in known]
        chart.add(
            gettext("Share of rounds"), [round(100 * known[role]["share"], 1) for role in known]
        )
        svg = _svg(chart)
    return {
        "title": title,
        "svg": svg,
        "head": (gettext("Who"), gettext("Before the reminder"), gettext("Closed rounds")),
        "rows": [
            (
                parties[role],
                words.percent(figures["share"]),
                str(figures["rounds"]),
            )
            for role, figures in known.items()
        ],
    }
