"""The Arrow store: a folder of append-only IPC segments, written by the driver only."""

from ._reader import StoreReader, open_store
from ._writer import StoreWriter

__all__ = ["StoreReader", "StoreWriter", "open_store"]
