"""Where intake's told words (keys.told) are translated: the `intake` command's catalogue
(domain "cli", babel-cli.cfg) for intake's own, with intake-keys' catalogue behind it for the
words of keys/ that intake shows (a refused reply bundle's reason on the journalist's page).
The `intake` command translates with its chosen language (intake.cli_i18n.said), the
journalist interface with the page's.
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

from keys.i18n import DOMAIN as KEYS_DOMAIN
from keys.i18n import LOCALE_DIR as KEYS_LOCALE_DIR
from keys.told import N_, Told, in_language, told

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
DOMAIN = "cli"

__all__ = ["DOMAIN", "N_", "TRANSLATIONS", "Told", "catalogue", "in_language", "told"]


@functools.cache
def catalogue(language: str) -> gettext.NullTranslations:
    """The translations of told words into ``language`` (English: none)."""
    translation = gettext.translation(DOMAIN, TRANSLATIONS, languages=[language], fallback=True)
    translation.add_fallback(gettext.translation(KEYS_DOMAIN, KEYS_LOCALE_DIR, languages=[language], fallback=True))
    return translation
