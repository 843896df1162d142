"""Error messages that the reader sees in their own language.

The layers below the interfaces (the store, the settings, tor) do not know who reads their
errors: an operator at a terminal under `--lang ru`, a journalist in the web interface, a log.
They raise with ``told(template, **fields)``: English words, as ``str(error)`` has always given,
that remember their template and fields. Where the words are shown, ``in_language`` translates
the template and fills the fields in again: the `intake` command with its chosen language, the
journalist interface with the page's. Their words live in the `intake` command's catalogue
(domain "cli"), where the extractor finds the templates by the keyword ``told`` (babel-cli.cfg).
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path
from typing import Callable

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
DOMAIN = "cli"


class Told(str):
    """English words made from ``template`` and ``fields``, which are kept for a translation."""

    template: str
    fields: dict[str, object]


def told(template: str, **fields: object) -> Told:
    """The English words of ``template`` with ``fields`` filled in, translatable later."""
    words = Told(template.format(**fields))
    words.template = template
    words.fields = fields
    return words


def in_language(said: object, gettext: Callable[[str], str]) -> str:
    """``said`` (an error or its words) translated by ``gettext``: told words and told errors
    among their fields are translated, anything else is shown as it is."""
    if isinstance(said, BaseException) and len(said.args) == 1 and isinstance(said.args[0], Told):
        said = said.args[0]
    if not isinstance(said, Told):
        return str(said)
    fields = {name: in_language(value, gettext) if isinstance(value, (Told, BaseException)) else value
              for name, value in said.fields.items()}
    return gettext(said.template).format(**fields)


@functools.cache
def catalogue(language: str) -> gettext.NullTranslations:
    """The translations of told words into ``language`` (English: none)."""
    return gettext.translation(DOMAIN, TRANSLATIONS, languages=[language], fallback=True)
