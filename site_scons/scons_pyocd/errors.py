"""The exception types users see: FlashError, and Interrupted (Ctrl-C) among them."""


class FlashError(Exception):
    """A user-facing failure: the message says what, where (file, address, probe) and what to do.

    Library exceptions (pyOCD, intelhex, pyelftools, OS errors) are translated into
    this type at the module boundary; users never see their tracebacks.
    """


class Interrupted(FlashError):
    """The user stopped the operation (Ctrl-C) between two steps."""
