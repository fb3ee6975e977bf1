"""The one exception type for mistakes a user can fix (bad flags, files, configs, prompts)."""


class UserError(ValueError):
    """A problem in the user's input; the CLI prints its message as one line and exits non-zero."""
