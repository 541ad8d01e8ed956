"""The one exception a user can cause: the CLI prints it on one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (file, flag, value). The message names what is wrong and where."""
