"""The project's error types.

Every user-facing failure is raised as an :class:`AttnvizError` subclass so that the web page,
the command line and the Python API can turn it into one readable message without guessing.
"""
from __future__ import annotations

# The exit status of every command when the user's input or settings are the problem (one line on stderr).
EXIT_USER_ERROR = 2


class AttnvizError(Exception):
    """Base class: the message is meant to be shown to the user as is."""


class ImageDecodeError(AttnvizError):
    """The input could not be turned into an RGB image (unreadable, unsupported, too large)."""


class ModelNotFoundError(AttnvizError):
    """A model name is not in the registry."""


class WeightsUnavailableError(AttnvizError):
    """A model's weights are not on this machine (nothing is downloaded at run time)."""


class CheckpointError(AttnvizError):
    """A checkpoint file was refused or does not fit the chosen architecture.

    ``field`` names what was wrong ("arch", "checkpoint", "classes", "layer") so a models file can point
    at the offending line; it is None when the caller has no such notion.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelsFileError(AttnvizError):
    """A models file (models.toml) entry is invalid; the message names the entry and the field."""


class TargetError(AttnvizError):
    """The requested target class or layer does not exist for a model."""


class LimitExceededError(AttnvizError):
    """A request asked for more than the server allows (models per request, time, size)."""


class DeviceError(AttnvizError):
    """The requested torch device does not exist on this machine or cannot be used."""


class DatasetError(AttnvizError):
    """A dataset folder, or one file in it (image, mask, VOC XML), could not be used; the message names it."""
