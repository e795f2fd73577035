"""The image limits live in the shared pure module `uplodr.limits` (the gateway carries them
without importing imaging); imaging re-exports them here."""

from uplodr.limits import DEFAULT_LIMITS, ImageLimits

__all__ = ["DEFAULT_LIMITS", "ImageLimits"]
