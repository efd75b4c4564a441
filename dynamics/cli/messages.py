"""Warnings raised while a command runs, shown as one `mdyn: warning: ...` line each."""

import contextlib
import sys
import warnings


@contextlib.contextmanager
def warnings_as_messages():
    """Print each distinct warning raised inside the block once, as it happens, on stderr."""
    seen = set()

    def show(message, category, *_):
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            print(f"mdyn: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = show
        yield
