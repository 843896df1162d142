"""The language of the `intake` command's messages (standard-library gettext).

`intake --lang ru ...` chooses it; without --lang the usual environment decides
(LANGUAGE, LC_ALL, LC_MESSAGES, LANG); anything without a catalogue is English.
The catalogue is intake/translations/LANG/LC_MESSAGES/cli.mo (domain "cli"),
made from cli.po with pybabel (intake/translations/README.md).

Click's own words (usage, "Missing option", "Error:") come from gettext's global
domain, read in the environment's language: `speak_for_click` points that domain
at click.mo, made from click's own source (domain "click"), and makes --lang the
process's LANGUAGE, as if the user had typed LANGUAGE=ru.
"""

from __future__ import annotations

import gettext
import os

from intake.told import DOMAIN, TRANSLATIONS, in_language
from keys.i18n import DOMAIN as KEYS_DOMAIN
from keys.i18n import LOCALE_DIR as KEYS_LOCALE_DIR

CLICK_DOMAIN = "click"
LANGUAGES = ("en", "ru")

_translation: gettext.NullTranslations = gettext.NullTranslations()
_chosen: str | None = None  # the language --lang asked for, if any


def set_language(language: str | None) -> None:
    """``None``: from the environment, as gettext reads it."""
    global _translation, _chosen
    _chosen = language
    languages = [language] if language else None
    _translation = gettext.translation(DOMAIN, TRANSLATIONS, languages=languages, fallback=True)
    # keys/' told words that intake passes on (a journalist's public key file that is not one).
    _translation.add_fallback(gettext.translation(KEYS_DOMAIN, KEYS_LOCALE_DIR, languages=languages, fallback=True))


def speak_for_click(language: str | None) -> None:
    """For the `intake` process only (its console script): click's own messages in ``language``
    (``None``: the environment's), from intake's catalogue of them."""
    if language in LANGUAGES:
        os.environ["LANGUAGE"] = language
    gettext.bindtextdomain(CLICK_DOMAIN, TRANSLATIONS)
    gettext.textdomain(CLICK_DOMAIN)


def language_option() -> str:
    """" --lang LANG" when --lang chose the language, else "": for the commands intake prints for
    the reader to copy, so that they answer in the same language wherever they are pasted."""
    return f" --lang {_chosen}" if _chosen else ""


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)


def pgettext(context: str, message: str) -> str:
    """For a word that is translated differently in another place (a count's label, a size's)."""
    return _translation.pgettext(context, message)


def said(error: BaseException) -> str:
    """An error's words in the chosen language (intake.told: the layers below speak English)."""
    return in_language(error, _translation.gettext)


def N_(message: str) -> str:
    """Marks a text for the catalogue where it is declared (e.g. a command's help); it is translated
    later, when shown (intake.cli_help)."""
    return message


set_language(None)
