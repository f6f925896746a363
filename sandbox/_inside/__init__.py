"""Programs that run inside a kernel host, not in this process.

They are read as source and passed to the host's Python with ``-c``, so a
kernel image needs nothing of ours but Python with ipykernel and pyzmq, and
the code on both ends of the channel always comes from the same checkout.
They import only the standard library, pyzmq and ipykernel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["source"]


def source(name: str) -> str:
    """The source text of ``launcher``, ``relay`` or ``dial``."""
    return (Path(__file__).parent / f"{name}.py").read_text()
