"""The one exception type users see."""


class FlashError(Exception):
    """A user-facing failure: the message says what, where (file, address, probe) and what to do.

    Library exceptions (pyOCD, intelhex, pyelftools, OS errors) are translated into
    this type at the module boundary; users never see their tracebacks.
    """
