"""uplodr: turn uploaded images into web variants on machines that exist only while there is
work. `from uplodr import Client, AsyncClient` gives the Python client; they are loaded on first
use, so `import uplodr` (which every command and worker does) stays as light as it was."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uplodr.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import uplodr.client

        return getattr(uplodr.client, name)
    raise AttributeError(f"module 'uplodr' has no attribute {name!r}")
