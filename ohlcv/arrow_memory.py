"""Which allocator Arrow uses in this platform's processes: jemalloc, unless the operator chose one.

pyarrow's wheels allocate through mimalloc by default. mimalloc hands freed pages back to the
operating system within milliseconds, so the next large allocation touches fresh pages again,
and on a virtual machine a first touch is a page fault the host must serve. Ingest allocates and
frees column-sized buffers one after another (24M trades: a few hundred MB each), and on the
2-core Firecracker VM we benchmark on it ran 32-37 s with mimalloc against 21-23 s with jemalloc
(which keeps freed pages for a while) and 22-26 s with the system allocator; reading the file
alone took 5.4-7.8 s against 1.5-2.2 s.

`ARROW_DEFAULT_MEMORY_POOL` (jemalloc, mimalloc or system), when set, wins: Arrow reads it
itself, and this module leaves the pool alone.
"""

from __future__ import annotations

import os

import pyarrow as pa

__all__ = ["choose_pool"]

OPERATOR_CHOICE = "ARROW_DEFAULT_MEMORY_POOL"


def choose_pool() -> None:
    """Switch Arrow's default pool to jemalloc where the wheel has it.

    Buffers already allocated keep the pool they came from, so switching at any time is safe."""
    if not os.environ.get(OPERATOR_CHOICE):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a pyarrow built without jemalloc (Windows wheels): keep its default
            pass
