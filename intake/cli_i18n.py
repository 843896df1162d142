"""The language of the `intake` command's messages (standard-library gettext).

`intake --lang ru ...` chooses it; without --lang the usual environment decides
(LANGUAGE, LC_ALL, LC_MESSAGES, LANG); anything without a catalogue is English.
The catalogue is intake/translations/LANG/LC_MESSAGES/cli.mo (domain "cli"),
made from cli.po with pybabel (intake/translations/README.md).
"""

from __future__ import annotations

import gettext
from pathlib import Path

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
DOMAIN = "cli"
LANGUAGES = ("en", "ru")

_translation: gettext.NullTranslations = gettext.NullTranslations()


def set_language(language: str | None) -> None:
    """``None``: from the environment, as gettext reads it."""
    global _translation
    languages = [language] if language else None
    _translation = gettext.translation(DOMAIN, TRANSLATIONS, languages=languages, fallback=True)


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)


def pgettext(context: str, message: str) -> str:
    """For a word that is translated differently in another place (a count's label, a size's)."""
    return _translation.pgettext(context, message)


set_language(None)
