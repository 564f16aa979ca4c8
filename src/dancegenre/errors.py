"""Exception hierarchy.

Every error a user can cause derives from :class:`DanceGenreError`; the CLI turns
those into one readable line and a non-zero exit code.  Anything else is a bug and
keeps its traceback.
"""


class DanceGenreError(Exception):
    """Base class for every error caused by input rather than by a bug."""


class ConfigError(DanceGenreError):
    """A parameter is out of range or two parameters contradict each other."""


class AudioDecodeError(DanceGenreError):
    """A file could not be read as audio (missing, corrupt, not audio, unreadable)."""


class AudioTooShortError(AudioDecodeError):
    """The audio is shorter than one segment."""


class SilentAudioError(AudioDecodeError):
    """The audio holds no signal (digital silence)."""


class EmptyInputError(DanceGenreError):
    """A folder, catalog or store holds nothing usable."""


class CatalogError(DanceGenreError):
    """A catalog CSV is malformed (missing column, unreadable)."""


class StoreError(DanceGenreError):
    """A prepared store is missing, incomplete or incompatible."""


class CheckpointError(DanceGenreError):
    """A checkpoint is missing, corrupt or was written by an incompatible version."""


class Interrupted(DanceGenreError):
    """The user stopped a job (Ctrl-C); what was finished is kept for the next run."""


class OutputError(DanceGenreError):
    """An output would replace an input, land among someone else's files, or cannot be
    written where it was asked for."""


class LabelError(DanceGenreError):
    """A label (genre name) that could act as a path or markup, or is otherwise unusable."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of a library's exception (its name if it has no message), cut to
    ``limit`` characters: what a one-line error quotes of an exception it wraps."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


# Path("") is the current folder: an input given as "" (an unset shell variable, say) is
# refused with this line rather than searched, sorted or prepared.
EMPTY_PATH = "an empty path was given (an unset shell variable?); name a file or folder"
