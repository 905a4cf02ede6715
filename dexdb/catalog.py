"""dexdb's Python API: ``dexdb.open(OUT)`` gives a :class:`Catalog` over the output directory of
``dexdb ingest``; every method runs a view or macro of ``sql/*.sql`` and returns polars.

    >>> import dexdb
    >>> cat = dexdb.open("dexdb-demo/catalogs")
    >>> near = cat.cone("sources", 150.23189, 2.363963, 3.0)            # polars, nearest first
    >>> spectra = cat.spectra(source_ids=near["source_id"])               # Array(Float32, 1036)
    >>> flux = cat.spectra_arrays(source_ids=near["source_id"]).spec      # numpy (n, 1036) float32
    >>> pairs = cat.xmatch(my_targets, "sources", 1.5, nearest=True)      # polars/pandas/astropy in
    >>> cubes = cat.cubes_at(228.78581, 51.268036)                        # cube path and url
    >>> lazy = cat.scan("detections").filter(pl.col("Npix") == 21)        # hive pruning kept
    >>> table = dexdb.to_astropy(spectra)                                 # with units

Positions are degrees and radii arcsec, or astropy angles (``37 * u.arcsec``, ``coord.ra``). Values are
bound as SQL parameters; catalog and column names are checked against the catalogs in OUT. A bad
argument or a failed query raises :class:`DexdbError` with the macro's message.

Threads: each call borrows a DuckDB session of its own from a pool (a cursor of the connection from
:func:`dexdb.sqlload.connect`, with the views and macros defined in it, since DuckDB keeps TEMP
definitions per session), so one Catalog serves several threads at once. Processes: open a Catalog
in each, or pass one to a process pool (it pickles as its path) started with ``spawn`` or
``forkserver``: polars' threads do not survive ``fork``.

Versions: each call reads the version that ``OUT/current`` names when the call starts, so a Catalog
kept open in a notebook follows a re-ingest (or ``dexdb classify``) instead of losing its files when
older versions are dropped; one call never mixes two versions.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dexdb import sqlload
from dexdb.constants import FLUX_DENSITY_UNIT
from dexdb.ingest.hats_layout import PartitionFile, cone_partition_files, partition_files

if TYPE_CHECKING:
    import lsdb
    from astropy.table import Table

#: Name under which a user table is registered in the session that runs a call; macros name it in
#: their error messages (``xmatch: user_table.dec must lie in [-90, 90] ...``).
USER_TABLE = "user_table"

#: Units :func:`to_astropy` gives columns by name (case-insensitive; xmatch's suffix ``_1`` ignored).
DEGREE_COLUMNS = frozenset({
    "ra", "dec", "ra_cen", "dec_cen", "ra_shot", "dec_shot", "ra_det", "dec_det", "ra_aper", "dec_aper",
    "corner_ra", "corner_dec", "wave_group_ra", "wave_group_dec",
})
ARCSEC_COLUMNS = frozenset({"dist_arcsec", "radius_arcsec"})
ANGSTROM_COLUMNS = frozenset({"wave", "wave1d"})
FLUX_DENSITY_COLUMNS = frozenset({"spec", "spec_err"})

# Reading a DB-API result as Arrow copies the rows once more; that is cheaper than the second bind of
# the relation path for the small results most calls return (a 37" cone: 37 ms against 46 ms).
warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)

# keyword of Catalog.spectra -> (id column of the macros spectra_by_<id>, the catalog they read)
_SPECTRA_BY = {"detectids": ("detectid", "detection_spectra"), "source_ids": ("source_id", "source_spectra")}


class DexdbError(ValueError):
    """A bad argument (unknown catalog or column, radius <= 0, NaN, empty input, ...) or a failed query.

    The message names the method or macro and the argument, e.g.
    ``cone: radius_arcsec must lie in (0, 36000] arcsec (10 deg), got -1.0``."""


class SpectraArrays(NamedTuple):
    """Spectra as numpy: ``spec[i]`` belongs to ``ids[i]``; NaN rows for ids not in the catalog.

    ``wave`` (1036,) in Angstrom, ``spec`` and ``spec_err`` (n, 1036) float32 in
    1e-17 erg/s/cm^2/Angstrom."""

    ids: np.ndarray
    wave: np.ndarray
    spec: np.ndarray
    spec_err: np.ndarray


def open(path: str | os.PathLike) -> Catalog:
    """The catalogs in ``path``, the output directory of ``dexdb ingest``.

    >>> cat = dexdb.open("/data/dexdb")
    >>> cat.catalogs
    ('detect_index', 'detection_spectra', 'detections', 'detinfo', 'fibers', 'ifu_index', ...)
    """
    return Catalog(path)


class Catalog:
    """The catalogs of one ``dexdb ingest`` output directory, queried through the SQL views and macros."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.Lock()
        self._closed = False
        self._connect()

    # -- sessions -------------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self._connection = sqlload.connect(self.path)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DexdbError(f"dexdb.open: {exc}") from exc
        self._pid = os.getpid()
        self._statements = sqlload.applicable(sqlload.catalogs_in(self.path))
        self._version = _pinned(self._connection)
        self._idle: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        self._idle.put(_Session(self._connection, self._version))
        self._partitions: dict[tuple[Path, str], list[PartitionFile]] = {}
        self._max_radius = self._connection.execute("SELECT max_radius_arcsec()").fetchall()[0][0]
        views = self._connection.sql(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = 'temp' ORDER BY table_name, column_index"
        ).fetchall()
        schema: dict[str, dict[str, str]] = {}
        for view, column, data_type in views:
            schema.setdefault(view, {})[column] = data_type
        # A catalog is a view the sky macros can take: its name is also its HATS directory.
        self._schema = {
            name: columns for name, columns in sorted(schema.items())
            if (self.path / name / name / "partition_info.csv").is_file()
        }
        if not self._schema:
            self._connection.close()
            raise DexdbError(f"dexdb.open: {self.path} holds no dexdb catalogs (expected the output of `dexdb ingest`)")

    def _new_session(self) -> _Session:
        with self._lock:
            cursor = self._connection.cursor()
        sqlload.prepare(cursor, self.path, self._statements)
        return _Session(cursor, _pinned(cursor))

    @contextmanager
    def _session(self) -> Iterator[_Session]:
        """A DuckDB session with the views and macros, used by this call alone, and the version it reads."""
        if self._closed:
            raise DexdbError(f"{self.path}: the catalog is closed")
        if os.getpid() != self._pid:
            # A forked child must not touch the parent's DuckDB database; the inherited sessions are
            # left alone (closing them would act on the parent's state).
            self._inherited = (self._connection, self._idle)
            self._lock = threading.Lock()
            self._connect()
        if sqlload.pinned_version(self.path) != self._version:
            # A newer version was published: later calls read it (a publish keeps only the previous
            # version, so sessions pinned to an older one would lose their files). Calls running
            # now finish on their own sessions, which go back to the old pool and are dropped.
            with self._lock:
                if sqlload.pinned_version(self.path) != self._version:
                    self._connect()
        idle = self._idle
        try:
            session = idle.get_nowait()
        except queue.Empty:
            session = self._new_session()
        try:
            yield session
        finally:
            idle.put(session)

    def close(self) -> None:
        """Close every session; later calls raise :class:`DexdbError`."""
        self._closed = True
        while True:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                break
            if session.connection is not self._connection:
                session.connection.close()
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return open, (str(self.path),)

    def __repr__(self) -> str:
        return f"dexdb.open({str(self.path)!r})  # {', '.join(self.catalogs)}"

    # -- schema ---------------------------------------------------------------------------------

    @property
    def catalogs(self) -> tuple[str, ...]:
        """Names of the catalogs in the directory, e.g. ``('detections', 'ifu_index', 'sources', ...)``."""
        return tuple(self._schema)

    def columns(self, catalog: str) -> dict[str, str]:
        """Column name -> DuckDB type of ``catalog``, e.g. ``{'source_id': 'BIGINT', 'spec': 'FLOAT[1036]', ...}``."""
        return dict(self._schema[self._catalog(catalog, "columns")])

    def _catalog(self, catalog: object, method: str) -> str:
        if not isinstance(catalog, str) or catalog not in self._schema:
            raise DexdbError(f"{method}: unknown catalog {catalog!r}; the catalogs in {self.path} are: "
                             + ", ".join(self._schema))
        return catalog

    def _columns(self, catalog: str, columns: Iterable[str] | None, method: str) -> list[str] | None:
        """The columns as the catalog spells them (names are case-insensitive), or None for all."""
        if columns is None:
            return None
        if isinstance(columns, str):
            columns = [columns]
        by_lower = {name.lower(): name for name in self._schema[catalog]}
        names = []
        for column in columns:
            if not isinstance(column, str) or column.lower() not in by_lower:
                raise DexdbError(f"{method}: {catalog} has no column {column!r}; its columns are: "
                                 + ", ".join(self._schema[catalog]))
            names.append(by_lower[column.lower()])
        if not names:
            raise DexdbError(f"{method}: columns is empty")
        return names

    # -- queries --------------------------------------------------------------------------------

    def _query(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None,
               tables: Mapping[str, pa.Table] | None = None) -> pl.DataFrame:
        with self._session() as session:
            return self._run(session, query, params, tables)

    @staticmethod
    def _run(session: _Session, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None,
             tables: Mapping[str, pa.Table] | None = None) -> pl.DataFrame:
        con = session.connection
        try:
            for name, table in (tables or {}).items():
                con.register(name, table)
            # execute() binds the query once; a relation (con.sql) binds it again to run it.
            return pl.from_arrow(con.execute(query, params).to_arrow_table())
        except duckdb.Error as exc:
            raise DexdbError(_message(exc)) from exc
        finally:
            for name in tables or {}:
                con.unregister(name)

    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> pl.DataFrame:
        """Any SQL over the views and macros, values bound as parameters.

        >>> cat.sql("SELECT source_type, count(*) AS n FROM sources WHERE z_hetdex > $z GROUP BY ALL",
        ...         {"z": 2.0})
        """
        return self._query(query, params)

    def cone(self, catalog: str, ra: float | Any, dec: float | Any, radius_arcsec: float | Any, *,
             columns: Iterable[str] | None = None) -> pl.DataFrame:
        """Rows of ``catalog`` within ``radius_arcsec`` of (ra, dec), nearest first, with ``dist_arcsec``:
        the rows of macro ``cone``, read by ``cone_in_files`` from the partition files that healpy's
        query_disc picks (no glob to bind). ``columns`` limits what is read, e.g. to leave the spectra on disk.

        >>> cat.cone("sources", 150.23189, 2.363963, 3.0, columns=["source_id", "shotid", "z_hetdex"])
        >>> cat.cone("detections", coord.ra, coord.dec, 37 * u.arcsec)
        """
        catalog = self._catalog(catalog, "cone")
        names = self._columns(catalog, columns, "cone")
        params = {"ra": _degrees(ra, "cone: ra"), "dec": _degrees(dec, "cone: dec"),
                  "radius": _arcsec(radius_arcsec, "cone: radius_arcsec")}
        with self._session() as session:
            files = self._cone_files(session.version, catalog, **params)
            if not files:
                # Bad arguments (the macro names them) or no partition near: the macro's answer.
                select = "*" if names is None else ", ".join(map(_quote_identifier, [*names, "dist_arcsec"]))
                return self._run(session, f"SELECT {select} FROM cone($catalog, $ra, $dec, $radius)",
                                 {"catalog": catalog, **params})
            # The files hold arrays as Parquet gives them (FLOAT[]): cast back to the view's types.
            types = self._schema[catalog]
            select = ", ".join(_quote_identifier(name) if "[" not in types[name]
                               else f"CAST({_quote_identifier(name)} AS {types[name]}) AS {_quote_identifier(name)}"
                               for name in names or types)
            return self._run(session, f"SELECT {select}, dist_arcsec "
                                      "FROM cone_in_files($files, $ra, $dec, $radius)",
                             {"files": files, **params})

    def _cone_files(self, version: Path, catalog: str, ra: float | None, dec: float | None,
                    radius: float | None) -> list[str]:
        """The files of ``catalog`` in ``version`` that healpy's query_disc says the cone may touch;
        none for arguments the macro refuses."""
        if None in (ra, dec, radius) or not (math.isfinite(ra) and abs(dec) <= 90 and 0 < radius <= self._max_radius):
            return []
        key = (version, catalog)
        if key not in self._partitions:
            self._partitions[key] = partition_files(version / catalog / catalog)
        return [str(p.path) for p in cone_partition_files(self._partitions[key], ra, dec, radius)]

    def xmatch(self, table: Any, catalog: str, radius_arcsec: float | Any, *, nearest: bool = False) -> pl.DataFrame:
        """Each row of ``table`` with every row of ``catalog`` within the radius (or only the nearest),
        and ``dist_arcsec`` (macro ``xmatch``). ``table``: polars, pandas, pyarrow, an astropy Table
        (angle units converted) or SkyCoord, with columns ra and dec in degrees; or a catalog name.
        Catalog columns whose name the table already has get the suffix ``_1`` (``RA_1``).

        >>> cat.xmatch(pl.DataFrame({"name": ["agn"], "ra": [150.2318], "dec": [2.364]}), "sources", 1.5)
        >>> cat.xmatch(SkyCoord(ra, dec, unit="deg"), "detections", 2 * u.arcsec, nearest=True)
        """
        params = {"catalog": self._catalog(catalog, "xmatch"), "radius": _arcsec(radius_arcsec, "xmatch: radius_arcsec"),
                  "nearest": bool(nearest)}
        if isinstance(table, str):
            params["tbl"], tables = self._catalog(table, "xmatch"), {}
        else:
            params["tbl"], tables = USER_TABLE, {USER_TABLE: _positions(table, "xmatch")}
        return self._query("SELECT * FROM xmatch($tbl, $catalog, $radius, nearest := $nearest)", params, tables)

    # -- multi-epoch groups ---------------------------------------------------------------------

    def groups(self, ra: float | Any, dec: float | Any, radius_arcsec: float | Any) -> pl.DataFrame:
        """Multi-epoch groups (friends-of-friends at 1.5", view ``source_groups``) whose mean position
        lies within the radius: group_id, n_members, n_epochs, ra, dec, source_ids, shotids, dist_arcsec.

        >>> cat.groups(150.2318, 2.364, 3.0)["n_epochs"]
        """
        return self.cone("source_groups", ra, dec, radius_arcsec)

    def group_members(self, group_ids: Any, *, columns: Iterable[str] | None = None) -> pl.DataFrame:
        """The ``sources`` rows (one per epoch) of the given groups with their group_id, by group and
        shotid; their spectra come from :meth:`spectra` with ``source_ids``.

        >>> cat.group_members(groups["group_id"], columns=["source_id", "shotid", "z_hetdex"])
        """
        ids = _id_list(group_ids, "group_members: group_ids")
        self._catalog("source_group_members", "group_members")
        names = self._columns(self._catalog("sources", "group_members"), columns, "group_members")
        select = "s.*" if names is None else ", ".join("s." + _quote_identifier(name) for name in names)
        return self._query(
            f"""WITH members AS MATERIALIZED (
                    SELECT group_id, source_id FROM source_group_members
                    WHERE group_id IN (SELECT checked_id(unnest($ids), 'group_members: group_id'))
                )
                SELECT members.group_id, {select}
                FROM sources s JOIN members USING (source_id)
                ORDER BY members.group_id, s.shotid, s.source_id""",
            {"ids": ids},
        )

    def regroup(self, table: Any, linking_arcsec: float | Any = 1.5) -> pl.DataFrame:
        """Friends-of-friends groups of ``table`` (columns source_id, ra, dec) at another linking length
        (macro ``fof_groups``): every row with group_id (smallest source_id of its group) and group_size.

        >>> near = cat.cone("sources", 150.2318, 2.364, 60, columns=["source_id", "RA", "DEC"])
        >>> cat.regroup(near, 3.0)
        """
        positions = _positions(table, "regroup")
        if "source_id" not in {name.lower() for name in positions.column_names}:
            raise DexdbError(f"regroup: the table needs a column source_id; it has: {', '.join(positions.column_names)}")
        return self._query(
            "SELECT * FROM fof_groups($tbl, linking_arcsec := $linking) ORDER BY group_id, source_id",
            {"tbl": USER_TABLE, "linking": _arcsec(linking_arcsec, "regroup: linking_arcsec")},
            {USER_TABLE: positions},
        )

    # -- spectra --------------------------------------------------------------------------------

    def spectra(self, *, detectids: Any = None, source_ids: Any = None) -> pl.DataFrame:
        """Calibrated spectra by id, one row per id in the given order: the id, wave, spec, spec_err as
        ``Array(Float32, 1036)`` (1e-17 erg/s/cm^2/Angstrom), null arrays for unknown ids. Detections
        (``detection_spectra``: spec1d / 2 / wdcor) or HPSC2 source-observations (``source_spectra``, per
        Angstrom as released): macros ``spectra_by_detectid`` / ``spectra_by_source_id``.

        >>> cat.spectra(detectids=[3000000001, 3000000017])
        >>> cat.spectra(source_ids=near["source_id"])
        """
        key, ids = self._ids(detectids, source_ids, "spectra")
        return self._query(f"SELECT {key}, wave, spec, spec_err FROM spectra_by_{key}($ids) ORDER BY ord",
                           {"ids": ids})

    def spectra_arrays(self, *, detectids: Any = None, source_ids: Any = None) -> SpectraArrays:
        """:meth:`spectra` as numpy arrays.

        >>> ids, wave, spec, spec_err = cat.spectra_arrays(detectids=ids)   # spec.shape == (len(ids), 1036)
        """
        frame = self.spectra(detectids=detectids, source_ids=source_ids)
        wave = frame["wave"][0].to_numpy()
        return SpectraArrays(frame[frame.columns[0]].to_numpy(), wave,
                             frame["spec"].to_numpy(), frame["spec_err"].to_numpy())

    def spectrum_rows(self, *, detectids: Any = None, source_ids: Any = None) -> pl.DataFrame:
        """The same spectra as 1036 rows per id (id, k, wave, flux, err), ready to plot or write as CSV;
        unknown ids give no rows (macros ``spectra_rows_by_detectid`` / ``spectra_rows_by_source_id``)."""
        key, ids = self._ids(detectids, source_ids, "spectrum_rows")
        return self._query(f"SELECT {key}, k, wave, flux, err FROM spectra_rows_by_{key}($ids) ORDER BY ord, k",
                           {"ids": ids})

    def _ids(self, detectids: Any, source_ids: Any, method: str) -> tuple[str, list[Any]]:
        given = {name: value for name, value in (("detectids", detectids), ("source_ids", source_ids))
                 if value is not None}
        if len(given) != 1:
            raise DexdbError(f"{method}: give either detectids or source_ids")
        (name, values), = given.items()
        key, catalog = _SPECTRA_BY[name]
        self._catalog(catalog, method)
        return key, _id_list(values, f"{method}: {name}")

    # -- cubes ----------------------------------------------------------------------------------

    def cubes_at(self, ra: float | Any, dec: float | Any) -> pl.DataFrame:
        """IFU cubes whose footprint contains (ra, dec): the ``ifu_index`` rows (shotid, ifuslot, path,
        url, ...) and dist_arcsec from the IFU centre (macro ``cubes_at``).

        >>> cat.cubes_at(228.78581, 51.268036)["url"]
        """
        self._catalog("ifu_index", "cubes_at")
        return self._query("SELECT * FROM cubes_at($ra, $dec)",
                           {"ra": _degrees(ra, "cubes_at: ra"), "dec": _degrees(dec, "cubes_at: dec")})

    def cubes_covering(self, table: Any) -> pl.DataFrame:
        """For each row of ``table`` (columns ra, dec; as for :meth:`xmatch`) the cubes whose footprint
        contains it: the table's columns, then the ``ifu_index`` columns (macro ``cubes_covering``)."""
        self._catalog("ifu_index", "cubes_covering")
        return self._query("SELECT * FROM cubes_covering($tbl)", {"tbl": USER_TABLE},
                           {USER_TABLE: _positions(table, "cubes_covering")})

    # -- the same files, read by other engines --------------------------------------------------

    def scan(self, catalog: str) -> pl.LazyFrame:
        """A polars LazyFrame over the catalog's Parquet files, with the hive columns Norder, Dir and
        Npix: filters on them skip the other partitions' files unopened.

        >>> cat.scan("detections").filter(pl.col("Npix") == 21, pl.col("sn") > 6).collect()
        """
        catalog = self._catalog(catalog, "scan")
        files = self.path / catalog / catalog / "dataset" / "Norder=*" / "Dir=*" / "Npix=*" / "*.parquet"
        return pl.scan_parquet(str(files), hive_partitioning=True)

    def to_lsdb(self, catalog: str) -> lsdb.Catalog:
        """The catalog as an ``lsdb`` Catalog over the same HATS files, with its 5" margin cache attached,
        for cross-matches that dask spreads over a cluster.

        >>> cat.to_lsdb("sources").crossmatch(cat.to_lsdb("detections"), radius_arcsec=1.5).compute()
        """
        catalog = self._catalog(catalog, "to_lsdb")
        try:
            import lsdb
        except ImportError as exc:
            raise DexdbError("to_lsdb: needs the lsdb package (pip install lsdb)") from exc
        return lsdb.open_catalog(self.path / catalog)


# -- conversions ------------------------------------------------------------------------------------


class _Session(NamedTuple):
    """A DuckDB session and the version directory its views read (pinned when it was prepared)."""

    connection: duckdb.DuckDBPyConnection
    version: Path


def _pinned(con: duckdb.DuckDBPyConnection) -> Path:
    return Path(con.execute("SELECT current_setting('file_search_path')").fetchall()[0][0])


def to_astropy(frame: pl.DataFrame, units: Mapping[str, Any] | None = None) -> Table:
    """An astropy Table of a result, with units: degrees for positions, arcsec for ``*_arcsec``,
    Angstrom for wave, 1e-17 erg/s/cm^2/Angstrom for spec and spec_err; ``units`` adds or overrides
    by column name. Array columns become 2-D columns; nulls become masked values.

    >>> table = dexdb.to_astropy(cat.spectra(source_ids=ids))
    >>> table["spec"].unit
    Unit("1e-17 erg / (Angstrom s cm2)")
    >>> dexdb.to_astropy(cat.spectrum_rows(detectids=[i]), {"flux": FLUX_DENSITY_UNIT, "err": FLUX_DENSITY_UNIT})
    """
    import astropy.units as u
    from astropy.table import MaskedColumn, Table

    explicit = dict(units or {})
    table = Table()
    for name in frame.columns:
        series = frame[name]
        values = series.to_numpy()
        if series.null_count() and not isinstance(series.dtype, pl.Array) and values.dtype.kind != "O":
            column = MaskedColumn(values, name=name, mask=series.is_null().to_numpy())
        else:
            column = values
        table[name] = column
        unit = explicit.get(name, _default_unit(name))
        if unit is not None:
            table[name].unit = u.Unit(unit)
    return table


def _default_unit(name: str) -> str | None:
    base = name.lower().removesuffix("_1")
    if base in DEGREE_COLUMNS:
        return "deg"
    if base in ARCSEC_COLUMNS:
        return "arcsec"
    if base in ANGSTROM_COLUMNS:
        return "Angstrom"
    if base in FLUX_DENSITY_COLUMNS:
        return FLUX_DENSITY_UNIT
    return None


def plot_spectra(frame: pl.DataFrame, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a PNG (or any matplotlib format, by suffix) of the spectra of :meth:`Catalog.spectra`, one
    line per id; published by rename, so a reader never sees half a file.

    >>> dexdb.plot_spectra(cat.spectra(source_ids=ids), "spectra.png", title="COSMOS AGN")
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    id_column = frame.columns[0]
    figure, axes = plt.subplots(figsize=(9, 4))
    for row in frame.iter_rows(named=True):
        if row["spec"] is not None:
            axes.plot(row["wave"], row["spec"], lw=0.7, label=f"{id_column} {row[id_column]}")
    axes.set_xlabel("wavelength (Angstrom, air)")
    axes.set_ylabel("flux density (1e-17 erg/s/cm$^2$/Angstrom)")
    if title:
        axes.set_title(title)
    if 0 < frame.height <= 12:
        axes.legend(fontsize="small")
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        figure.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)
    return path


# -- argument conversion ------------------------------------------------------------------------------


def _message(exc: duckdb.Error) -> str:
    """DuckDB's message without its class prefix ("Invalid Input Error: ")."""
    text = str(exc).strip()
    head, sep, rest = text.partition(": ")
    return rest if sep and head.endswith(("Error", "Exception")) and " " in head else text


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _float(value: Any, unit: str, what: str) -> float | None:
    """A number in ``unit`` from a number or an astropy Quantity; None stays None for the macro to refuse."""
    if value is None:
        return None
    to_value = getattr(value, "to_value", None)
    if to_value is not None:
        import astropy.units as u

        try:
            value = to_value(u.Unit(unit))
        except u.UnitsError as exc:
            raise DexdbError(f"{what} must be an angle, got {value!r}") from exc
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise DexdbError(f"{what} must be a number ({unit}) or an astropy angle, got {value!r}") from exc
    return number


def _degrees(value: Any, what: str) -> float | None:
    return _float(value, "deg", what)


def _arcsec(value: Any, what: str) -> float | None:
    return _float(value, "arcsec", what)


def _id_list(values: Any, what: str) -> list[Any]:
    """Ids as a Python list for binding; the macros check each (NULL, NaN, fractions are refused there)."""
    if isinstance(values, (int, np.integer)):
        return [int(values)]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise DexdbError(f"{what} must be a list of integer ids, got {values!r}")
    listed = values.to_list() if isinstance(values, pl.Series) else np.asarray(values).tolist()
    if not listed:
        raise DexdbError(f"{what} is empty")
    return listed


def _positions(table: Any, method: str) -> pa.Table:
    """A user table as Arrow with ra and dec in degrees: polars, pandas, pyarrow, astropy Table or SkyCoord."""
    arrow = _to_arrow(table, method)
    lower = [name.lower() for name in arrow.column_names]
    for needed in ("ra", "dec"):
        if lower.count(needed) != 1:
            raise DexdbError(f"{method}: the table needs one column {needed} (degrees, any case); "
                             f"it has: {', '.join(arrow.column_names) or 'no columns'}")
    if arrow.num_rows == 0:
        raise DexdbError(f"{method}: the table has no rows")
    return arrow


def _to_arrow(table: Any, method: str) -> pa.Table:
    if isinstance(table, pl.LazyFrame):
        table = table.collect()
    if isinstance(table, pl.DataFrame):
        return table.to_arrow()
    if isinstance(table, pa.Table):
        return table
    module = type(table).__module__
    if module.startswith("pandas"):
        return pa.Table.from_pandas(table, preserve_index=False)
    if module.startswith("astropy"):  # imported only for astropy input: it takes a second to load
        from astropy.coordinates import SkyCoord
        from astropy.table import Table

        if isinstance(table, SkyCoord):
            icrs = table.icrs
            return pa.table({"ra": np.atleast_1d(icrs.ra.deg), "dec": np.atleast_1d(icrs.dec.deg)})
        if isinstance(table, Table):
            return _astropy_to_arrow(table, method)
    raise DexdbError(f"{method}: expected a polars, pandas or pyarrow table, an astropy Table or a SkyCoord, "
                     f"got {type(table).__name__}")


def _astropy_to_arrow(table: Table, method: str) -> pa.Table:
    """Columns of an astropy Table; angle columns in degrees, SkyCoord columns split into ra and dec."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    columns: dict[str, pa.Array] = {}
    for name in table.colnames:
        column = table[name]
        if isinstance(column, SkyCoord):
            icrs = column.icrs
            columns["ra"], columns["dec"] = pa.array(icrs.ra.deg), pa.array(icrs.dec.deg)
            continue
        unit = getattr(column, "unit", None)
        values = column
        if unit is not None and name.lower() in ("ra", "dec"):
            try:
                values = u.Quantity(column).to_value(u.deg)
            except u.UnitsError as exc:
                raise DexdbError(f"{method}: column {name} must be an angle, has unit {unit}") from exc
        elif isinstance(values, u.Quantity):
            values = values.value
        mask = getattr(values, "mask", None)
        data = np.ma.getdata(values)
        if data.dtype.kind == "S":  # FITS text
            data = np.char.decode(data, "ascii")
        elif not data.dtype.isnative:  # FITS is big-endian; Arrow takes native order only
            data = data.astype(data.dtype.newbyteorder("="))
        if data.ndim == 2:
            flat = pa.array(np.ascontiguousarray(data).reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, data.shape[1])
        else:
            columns[name] = pa.array(data, mask=None if mask is None or not np.any(mask) else np.asarray(mask))
    return pa.table(columns)

