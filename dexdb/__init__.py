"""dexdb: a DuckDB/Parquet analytical data layer for HETDEX PDR1."""

__version__ = "0.1.0"
