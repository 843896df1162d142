"""The guide for sources: how to reach the tip line when Tor is blocked, which
device to use, what we will never ask, what we keep, and how to check the address.

Its words live outside the code, so an editor can change them: one TOML file per
language (``en.toml``, ``ru.toml``) and the bridge advice, dated, in
``bridges.toml``. The same guide is the page ``intake publish`` writes for the
newsroom's website (intake.guide.publish) and the /guide page of the source onion
(intake.app.guide); the landing page shows its short version.
"""

from __future__ import annotations

import datetime
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date

from intake.retention import RetentionPolicy

GUIDE_DIR = Path(__file__).resolve().parent
BRIDGES_FILE = GUIDE_DIR / "bridges.toml"
LANGUAGES = ("en", "ru")
STALE_AFTER_DAYS = 90  # bridge advice older than this is probably out of date


class GuideError(ValueError):
    """A guide file is missing, unreadable or incomplete; the message names the file and the problem."""


@dataclass(frozen=True)
class BridgeStep:
    name: str
    text: str


@dataclass(frozen=True)
class BridgeAdvice:
    checked: datetime.date
    steps: dict[str, tuple[BridgeStep, ...]]  # by language, in the order to try them

    def age_days(self, today: datetime.date) -> int:
        return (today - self.checked).days


@dataclass(frozen=True)
class Guide:
    """Everything a page of the guide shows, in one language."""

    language: str
    text: dict[str, Any]  # the language's TOML, as read
    bridges: tuple[BridgeStep, ...]
    bridges_checked: str  # the date the bridge advice was checked, written out in the language
    kept: tuple[str, ...]  # "what we keep", with the instance's retention periods filled in


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as error:
        raise GuideError(f"{path}: cannot be read ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise GuideError(f"{path}: not valid TOML ({error})") from None


@functools.lru_cache(maxsize=len(LANGUAGES))
def guide_text(language: str) -> dict[str, Any]:
    """The guide's words in one language (read once per process; the files ship with intake)."""
    if language not in LANGUAGES:
        language = "en"
    return _read_toml(GUIDE_DIR / f"{language}.toml")


def load_bridge_advice(path: Path = BRIDGES_FILE) -> BridgeAdvice:
    data = _read_toml(path)
    checked = data.get("checked")
    if type(checked) is not datetime.date:
        raise GuideError(f"{path}: `checked` must be the date the advice was last checked, e.g. checked = 2026-12-01")
    steps = data.get("step")
    if not isinstance(steps, list) or not steps:
        raise GuideError(f"{path}: no [[step]] entries")
    by_language: dict[str, tuple[BridgeStep, ...]] = {}
    for language in LANGUAGES:
        try:
            by_language[language] = tuple(BridgeStep(str(step["name"][language]), str(step["text"][language])) for step in steps)
        except (KeyError, TypeError):
            raise GuideError(f"{path}: every [[step]] needs name.{language} and text.{language}") from None
    return BridgeAdvice(checked, by_language)


def days(language: str, count: int) -> str:
    """'14 days' / '14 дней': the plural form the language's rules ask for."""
    forms = guide_text(language)["days"]
    form = Locale.parse(language).plural_form(count)
    return forms.get(form, forms["other"]).format(n=count)


def build_guide(language: str, retention: RetentionPolicy, bridges: BridgeAdvice) -> Guide:
    text = guide_text(language)
    periods = {
        "exported": days(language, retention.exported_days),
        "read_reply": days(language, retention.read_reply_days),
        "unused": days(language, retention.unused_source_days),
    }
    return Guide(
        language=language,
        text=text,
        bridges=bridges.steps[language],
        bridges_checked=format_date(bridges.checked, format="long", locale=language),
        kept=tuple(item.format_map(periods) for item in text["keep"]["items"]),
    )
