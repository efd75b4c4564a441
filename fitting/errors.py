"""The project's one exception type for mistakes a user can make.

It lives in `fitting` because `fitting` is the package every other package may import
(`predictors` imports only `fitting`; `dynamics` composes all three).
"""


class UserError(Exception):
    """Bad input (a path, a revision, a config, a table): the message says what is wrong and how to fix it."""
