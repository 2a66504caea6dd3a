"""The one error type corpus loading raises: it names the file, row or field and says what was expected."""

from ..errors import InputError


class CorpusError(InputError):
    """A corpus on disk does not match its documented layout (missing images, header mismatch, unknown label
    string, empty split, unreadable image)."""
