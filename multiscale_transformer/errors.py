"""The one exception type for mistakes a user can fix (bad flags, files, configs, prompts)."""


class UserError(ValueError):
    """A problem in the user's input; the CLI prints its message as one line and exits non-zero."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (torch's are often long), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
