"""Bar charts rendered on the server as inline SVG.

The admin must work without a CDN or a JavaScript build, so the overview's
charts are plain SVG markup: stacked bars, a ``<title>`` per bar for the
hover text, colours from CSS classes (with fill attributes as a fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 200
LEFT = 44  # room for the y-axis labels
BOTTOM = 22  # room for the x-axis labels
TOP = 8


@dataclass(frozen=True)
class Segment:
    """One coloured part of a stacked bar."""

    value: float
    css_class: str
    fill: str


@dataclass(frozen=True)
class Bar:
    """One bar: its segments bottom to top, the hover text and an optional axis label."""

    segments: tuple[Segment, ...]
    title: str
    axis_label: str = ""

    @property
    def total(self) -> float:
        """The height of the whole stack."""
        return sum(segment.value for segment in self.segments)


def _nice_ceiling(value: float) -> float:
    """Round ``value`` up to 1, 2 or 5 times a power of ten (a readable axis maximum)."""
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover  (the loop always returns)


def _coord(value: float) -> str:
    """An SVG coordinate: format_html escapes its arguments, so numbers go in as text."""
    return f"{value:.1f}"


def _number(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
    return f"{text}{unit}"


def bar_chart(
    bars: Sequence[Bar],
    *,
    label: str,
    max_value: float | None = None,
    unit: str = "",
) -> SafeString:
    """Render ``bars`` as an SVG bar chart.

    Args:
        bars: the bars, left to right.
        label: the accessible name of the chart (``aria-label``).
        max_value: the top of the y axis; by default a round number above
            the tallest bar.
        unit: appended to the y-axis labels (``"%"`` for rates).

    Returns:
        The ``<svg>`` element, safe to put in a template.
    """
    top_value = (
        max_value
        if max_value is not None
        else _nice_ceiling(max((b.total for b in bars), default=0))
    )
    plot_width = WIDTH - LEFT - 4
    plot_height = HEIGHT - TOP - BOTTOM
    step = plot_width / max(len(bars), 1)
    bar_width = max(step * 0.78, 1.0)
    baseline = TOP + plot_height

    grid = format_html_join(
        "",
        '<line class="tq-grid" x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ccc" />'
        '<text class="tq-axis" x="{}" y="{}" text-anchor="end" font-size="11">{}</text>',
        (
            (
                LEFT,
                WIDTH - 4,
                _coord(baseline - plot_height * fraction),
                _coord(baseline - plot_height * fraction),
                LEFT - 6,
                _coord(baseline - plot_height * fraction + 4),
                _number(top_value * fraction, unit),
            )
            for fraction in (0.0, 0.5, 1.0)
        ),
    )

    parts: list[SafeString] = []
    for index, bar in enumerate(bars):
        x = LEFT + index * step + (step - bar_width) / 2
        y = float(baseline)
        rects: list[SafeString] = []
        for segment in bar.segments:
            if segment.value <= 0:
                continue
            height = plot_height * min(segment.value, top_value) / top_value
            y -= height
            rects.append(
                format_html(
                    '<rect class="{}" fill="{}" x="{}" y="{}" width="{}" height="{}" />',
                    segment.css_class,
                    segment.fill,
                    _coord(x),
                    _coord(y),
                    _coord(bar_width),
                    _coord(height),
                )
            )
        # A transparent full-height rect makes the hover text reachable on empty bars too.
        parts.append(
            format_html(
                '<g class="tq-bar"><title>{}</title>'
                '<rect fill="transparent" x="{}" y="{}" width="{}" height="{}" />{}</g>',
                bar.title,
                _coord(x),
                TOP,
                _coord(bar_width),
                plot_height,
                mark_safe("".join(rects)),  # each rect was built by format_html
            )
        )
        if bar.axis_label:
            parts.append(
                format_html(
                    '<text class="tq-axis" x="{}" y="{}" text-anchor="middle" '
                    'font-size="11">{}</text>',
                    _coord(x + bar_width / 2),
                    HEIGHT - 6,
                    bar.axis_label,
                )
            )
    return format_html(
        '<svg class="tq-chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">{}{}</svg>',
        WIDTH,
        HEIGHT,
        label,
        grid,
        mark_safe("".join(parts)),  # each part was built by format_html
    )
