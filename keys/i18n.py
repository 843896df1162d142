"""The language of intake-keys' messages and of the index.html it writes.

Standard-library gettext only (keys/ runs offline on PyNaCl and the standard
library). `intake-keys --lang ru ...` chooses it; without --lang the usual
environment decides (LANGUAGE, LC_ALL, LC_MESSAGES, LANG); anything without a
catalogue is English. Catalogue: keys/locale/LANG/LC_MESSAGES/intake-keys.mo,
made from its .po with pybabel on a development machine (keys/locale/README.md).

argparse's own words (usage, "the following arguments are required") come from
gettext's global domain, read in the environment's language: `speak_for_argparse`
points that domain at keys/locale/LANG/LC_MESSAGES/argparse.mo, made from the
standard library's argparse (domain "argparse"), and makes --lang the process's
LANGUAGE, as if the user had typed LANGUAGE=ru.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "intake-keys"
ARGPARSE_DOMAIN = "argparse"
LANGUAGES = ("en", "ru")
YES = ("y", "yes", "д", "да")  # a yes to a [y/N] question, in any of LANGUAGES (intake's commands too)

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def set_language(language: str | None) -> None:
    """``None``: from the environment, as gettext reads it."""
    global _translation, _language
    _translation = gettext.translation(DOMAIN, LOCALE_DIR, languages=[language] if language else None, fallback=True)
    _language = _translation.info().get("language", "en") or "en"


def speak_for_argparse(language: str | None) -> None:
    """For the intake-keys process only (its main): argparse's own messages in ``language``
    (``None``: the environment's), from our catalogue of them."""
    if language in LANGUAGES:
        os.environ["LANGUAGE"] = language
    gettext.bindtextdomain(ARGPARSE_DOMAIN, LOCALE_DIR)
    gettext.textdomain(ARGPARSE_DOMAIN)


def language() -> str:
    """The language messages are in now, for an HTML ``lang`` attribute."""
    return _language


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)


set_language(None)
