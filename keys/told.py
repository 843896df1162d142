"""Error messages that the reader sees in their own language.

The layers below the interfaces (intake's store and settings, keys' formats) do not know who
reads their errors: a journalist at `intake-keys --lang ru`, an operator at `intake`, the
journalist web interface, a log. They raise with ``told(template, **fields)``: English words,
as ``str(error)`` has always given, that remember their template and fields. Where the words
are shown, ``in_language`` translates the template with that place's catalogue and fills the
fields in again; the extractor finds the templates by the keyword ``told`` (babel-keys.cfg,
babel-cli.cfg). Standard library only, like the rest of keys/.
"""

from __future__ import annotations

from typing import Callable


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


def N_(template: str) -> str:
    """Marks a template for the catalogue where it is written apart from its told() call."""
    return template
