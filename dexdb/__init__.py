"""dexdb: a DuckDB/Parquet analytical data layer for HETDEX PDR1.

    >>> import dexdb
    >>> cat = dexdb.open("dexdb-demo/catalogs")
    >>> cat.cone("sources", 150.23189, 2.363963, 3.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Catalog", "DexdbError", "SpectraArrays", "__version__", "open", "plot_spectra", "to_astropy"]

if TYPE_CHECKING:
    from dexdb.catalog import Catalog, DexdbError, SpectraArrays, open, plot_spectra, to_astropy


def __getattr__(name: str) -> Any:
    # The API imports polars and DuckDB; loading it on first use keeps `import dexdb.mock` and the CLI's
    # start light.
    if name in __all__:
        from dexdb import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'dexdb' has no attribute {name!r}")
