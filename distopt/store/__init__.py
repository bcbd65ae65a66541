"""The store: a folder of checksummed Parquet parts any tool reads live, written by the driver
only (see ``_table`` for how rows become durable and then published)."""

from ._reader import StoreReader, open_store
from ._writer import StoreWriter

__all__ = ["StoreReader", "StoreWriter", "open_store"]
