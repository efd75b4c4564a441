"""Every exception and warning of the project, each also a subclass of the builtin it resembles.

They live in `fitting` because it is the package every other package may import (`predictors` imports only
`fitting`; `dynamics` composes all three). The CLI prints a `UserError` as one line and exits 2.
"""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters, for a one-line error or ledger
    detail; the exception's type name when it has no message."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


class UserError(Exception):
    """Bad input (a path, a revision, a config, a table): the message says what is wrong and how to fix it."""


class MissingCheckpoint(UserError, FileNotFoundError):
    """A revision exists but its weight files do not (the sweep records it as `missing`)."""


class CorruptCheckpoint(UserError, ValueError):
    """A weight file is there but unreadable, e.g. a truncated download (the sweep records it as `corrupt`)."""


class StoreLocked(UserError, TimeoutError):
    """Another writer held the store's lock for longer than this process would wait."""


class UnreadableShardWarning(UserWarning):
    """A store shard could not be read and was skipped (the next sweep sets it aside and measures it again)."""


class ExtrapolationWarning(UserWarning):
    """A feature of a planned architecture lies outside the range the predictor was trained on."""


class MassiveActivationWarning(UserWarning):
    """A layer of a tracked run measured, or is forecast to reach, a massive activation (Sun et al.'s rule)."""
