"""The `intake` command's --help in the language of its messages.

Help texts are written in English and marked with `N_` (so that pybabel extracts them into the
"cli" catalogue, babel-cli.cfg) where commands and options are declared, at import, before the
language is known. The classes here keep that English text and translate it each time click
reads it to write the help, by which time `--lang` (an eager option, handled first) or the
environment has chosen the language (intake.cli_i18n).
"""

from __future__ import annotations

from typing import Any

import click

from intake.cli_i18n import N_, _

# What click calls the types of intake's options (made uppercase at import, when options are
# declared); named in the language of the help when it is shown.
TYPE_NAMES = frozenset((N_("FILE"), N_("DIRECTORY"), N_("PATH"), N_("TEXT"), N_("INTEGER RANGE"), N_("FLOAT RANGE")))


# intake's arguments, as click names them (their names made uppercase).
ARGUMENT_NAMES = frozenset((N_("BACKUP"), N_("BUNDLE")))
# The pieces click writes after the command's name in "Usage:" (its defaults, never passed to
# gettext by click itself).
USAGE_PIECES = frozenset((N_("[OPTIONS]"), N_("COMMAND [ARGS]...")))


class _TranslatedHelp:
    """`help` holds the English text; reading it gives the text in the language chosen now."""

    help_values: dict[str, object] = {}

    @property
    def help(self) -> str | None:
        english = self._english_help
        if not english:
            return english
        return _(english).format(**self.help_values) if self.help_values else _(english)

    @help.setter
    def help(self, english: str | None) -> None:
        self._english_help = english


class _TranslatedUsage:
    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [_(piece) if piece in USAGE_PIECES else piece for piece in super().collect_usage_pieces(ctx)]


class TranslatedCommand(_TranslatedUsage, _TranslatedHelp, click.Command):
    pass


class TranslatedGroup(_TranslatedUsage, _TranslatedHelp, click.Group):
    """Its commands and subgroups are translated too (click's command_class and group_class)."""

    command_class = TranslatedCommand
    group_class = type


class TranslatedOption(_TranslatedHelp, click.Option):
    def __init__(self, *args: Any, help_values: dict[str, object] | None = None, **kwargs: Any) -> None:
        """``help_values``: what fills the help text's {placeholders}, after translation."""
        if help_values:
            self.help_values = help_values
        super().__init__(*args, **kwargs)

    def make_metavar(self, ctx: click.Context) -> str:
        metavar = super().make_metavar(ctx)
        return _(metavar) if metavar in TYPE_NAMES else metavar

    def get_help_extra(self, ctx: click.Context) -> dict[str, Any]:
        extra = super().get_help_extra(ctx)
        if "required" in extra:  # click's own word, which click's catalogue lacks (it is never passed to _ literally)
            extra["required"] = _("required")
        return extra

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """click writes " (env var: 'INTAKE_DATA')" in English whatever the language (newcomer test)."""
        hint = click.Parameter.get_error_hint(self, ctx)
        if self.show_envvar and self.envvar:
            names = [self.envvar] if isinstance(self.envvar, str) else self.envvar
            hint += " " + _("(environment variable: {names})").format(names=", ".join(f"'{name}'" for name in names))
        return hint


class TranslatedArgument(click.Argument):
    def make_metavar(self, ctx: click.Context) -> str:
        metavar = super().make_metavar(ctx)
        return _(metavar) if metavar in ARGUMENT_NAMES else metavar


def option(*param_decls: str, **attrs: Any):
    """click.option whose help follows the language of the messages."""
    attrs.setdefault("cls", TranslatedOption)
    return click.option(*param_decls, **attrs)
