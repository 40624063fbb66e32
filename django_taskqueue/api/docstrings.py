"""Docstrings as the API's readers see them: Sphinx markup turned into Markdown.

The view docstrings are written for Sphinx (``:meth:`...```, double-backquoted
literals), and DRF shows them as they are in the browsable API and in ``OPTIONS``
answers, as drf-spectacular does in the OpenAPI schema. These read them as
Markdown instead, which is what both render.
"""

from __future__ import annotations

import re

# :role:`text`, :domain:role:`text`, with an optional "title <target>" form and
# the "~" (last part only) and "!" (no link) prefixes. The text may span lines.
_ROLE = re.compile(r"(?<![\w`]):(?:[\w-]+:)?[\w-]+:`(?P<text>[^`]+)`")
_TITLED = re.compile(r"(?P<title>.*?)\s*<[^<>]+>\s*$", re.DOTALL)
_LITERAL = re.compile(r"``(?P<text>(?:(?!``).)+?)``", re.DOTALL)


def _role(match: re.Match[str]) -> str:
    text = match["text"].strip()
    titled = _TITLED.fullmatch(text)
    if titled and titled["title"]:
        text = titled["title"]
    else:
        text = text.lstrip("!")
        if text.startswith("~"):
            text = text[1:].rsplit(".", 1)[-1]
    return f"`{' '.join(text.split())}`"


def markdown_description(text: str) -> str:
    """``text`` with its Sphinx roles and double-backquoted literals as Markdown code.

    Args:
        text: A docstring (or part of one) written in reStructuredText.

    Returns:
        The same text, where ``:class:`~a.b.C``` reads `` `C` ``,
        ``:meth:`title <target>``` reads `` `title` `` and a double-backquoted
        literal reads as a single-backquoted one.
    """
    text = _ROLE.sub(_role, text)
    return _LITERAL.sub(lambda m: f"`{' '.join(m['text'].split())}`", text)
