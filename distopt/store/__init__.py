"""The store: a folder of checksummed Parquet parts any tool reads live, written by the driver
only (see ``_table`` for how rows become durable and then published).

The names below are the store's public face for the rest of distopt; its modules are private.
"""

from ._lock import check_free
from ._metadata import METADATA_FILE, library_versions, read_metadata
from ._reader import StoreReader, open_store
from ._recover import DAMAGED
from ._schema import configs_from_table, metric_columns
from ._writer import StoreWriter, settle

__all__ = ["DAMAGED", "METADATA_FILE", "StoreReader", "StoreWriter", "check_free",
           "configs_from_table", "library_versions", "metric_columns", "open_store",
           "read_metadata", "settle"]
