"""The errors a user causes and can fix from the message alone.

The command line prints these as one line (`cxr-vitmae …: error: …`); any other exception is a bug in this package or
its environment and keeps its traceback. `CorpusError` (corpora) and `ConversionError` (checkpoints) are kinds of
`InputError`; `RadiographReadError` (images) cannot be, because it lives in the image processor that model directories
carry without this package, so the CLI names it separately.
"""


class InputError(ValueError):
    """An argument or file the user gave is missing, unreadable or not what the command needs; the message names it
    and says what was expected."""


class HubRequestError(InputError):
    """The Hugging Face Hub refused a request (authentication, permissions, invalid card metadata); the message is
    the Hub's first line, which says what failed."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


__all__ = ["HubRequestError", "InputError", "MissingExtraError"]
