"""httpx, without the cost of its command line.

`import httpx` also imports `httpx._main`, the `httpx` command, whenever its extras are installed
— and beside uplodr's own command line they are (click, rich, pygments). Measured with
`python -X importtime -c "import uplodr.client"` on the 2-core CI machine: httpx._main took
100 to 170 ms of the client's 250 to 400 ms, for a command the client never runs. So before httpx is
first imported, a stand-in takes `httpx._main`'s place; its `main` imports the real module on
first call, so the `httpx` command (and anything calling `httpx.main`) still works.

When httpx is already loaded (the process imported it first), nothing is changed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_MAIN = "httpx._main"


def _real_main(*args: Any, **kwargs: Any) -> Any:
    """httpx's command line, loaded now: the stand-in steps aside for the real module."""
    if getattr(sys.modules.get(_MAIN), "stand_in", False):
        del sys.modules[_MAIN]
    return importlib.import_module(_MAIN).main(*args, **kwargs)


def _stand_in() -> None:
    if "httpx" in sys.modules or _MAIN in sys.modules:
        return
    module = types.ModuleType(_MAIN, "httpx's command line, loaded on first use (uplodr.client)")
    module.main = _real_main  # type: ignore[attr-defined]
    module.stand_in = True  # type: ignore[attr-defined]
    sys.modules[_MAIN] = module


_stand_in()

import httpx  # noqa: E402  (after the stand-in, by design)

__all__ = ["httpx"]
