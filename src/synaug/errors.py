"""One exception type for every problem a user can fix.

The CLI prints ``error: <message>`` on one line and exits with status 2; the message
always names the fix. Library callers catch :class:`SynaugError`.
"""


class SynaugError(Exception):
    """A user-fixable problem; ``str(error)`` is a single line that names the fix.

    >>> try:
    ...     synaug.load_generator("embeded")
    ... except synaug.SynaugError as error:
    ...     print(error)  # doctest: +SKIP
    generator 'embeded' is neither a folder here nor a shipped generator; did you mean 'embedded'?
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class SynaugWarning(UserWarning):
    """Something the user may want to fix that does not stop the work; the CLI prints it as ``warning: <message>``.

    >>> import warnings
    >>> warnings.simplefilter("error", synaug.SynaugWarning)  # doctest: +SKIP
    """


class StoreMismatch(SynaugError):
    """A synthetic store made by another plan, generator or generator settings than asked; ``reason``
    says which ("was made by a different plan ..."), so callers can name their own fix."""

    def __init__(self, root: object, reason: str):
        super().__init__(f"store {root} {reason}; use a new --out folder, or --overwrite to replace it.")
        self.root, self.reason = root, reason
