"""Run `mdyn` in process through its console-script entry point, as a user's shell would."""

import sys

import pytest


def run_main(args, capsys) -> tuple[int, object]:
    """(exit status, captured stdout/stderr) of `mdyn ARGS`; `main` maps a UserError to one line and status 2."""
    from dynamics.cli.app import main

    argv = sys.argv
    sys.argv = ["mdyn", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = argv
    return exit_info.value.code, capsys.readouterr()
