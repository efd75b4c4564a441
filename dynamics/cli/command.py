"""The click classes of `mdyn`'s commands and groups: typer's own, with help that gives a flag no value type.

typer 0.29 labels every option in the help with its Python type, a flag too (`--offline  <bool>`), though a
flag takes no value; an empty metavar leaves its type column blank. `-h` is a second name of `--help`.
"""

from typer.core import TyperCommand, TyperGroup

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def _without_flag_types(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help shows no `<bool>` for its flags (see the module docstring)."""

    def get_params(self, ctx):
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    """A group of commands whose help shows no `<bool>` for its flags (see the module docstring)."""

    def get_params(self, ctx):
        return _without_flag_types(super().get_params(ctx))
