"""A process that dies with its parent: the one Linux call the launcher and the workers both make.

The launcher asks it for each child it spawns (SIGTERM: a worker's usual shutdown), a prefork
pool child asks it of its Celery worker (SIGKILL: nothing of it is worth keeping).
"""

from __future__ import annotations

import ctypes
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig) == 0
    except (OSError, AttributeError):
        return False
