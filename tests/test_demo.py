"""``dexdb demo`` on a fresh directory: mock -> ingest -> queries, as the README's first command runs it."""

from __future__ import annotations

from click.testing import CliRunner

from dexdb.cli import main
from dexdb.ingest.verify import verify


def test_demo_runs_the_whole_path(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    # the nine epochs of the COSMOS AGN, found by the demo's query, one line each
    assert result.output.count("HETDEX J1000") == 9
    for source_type in ("lae", "oii", "agn", "lzg", "star"):
        assert f"│ {source_type} " in result.output
    catalogs = tmp_path / "demo" / "catalogs"
    assert (catalogs / "dexdb-shell").is_file() and str(catalogs / "dexdb-shell") in result.output
    assert verify(catalogs, tmp_path / "demo" / "pdr1") == []
    plot = tmp_path / "demo" / "cosmos_agn_epochs.png"
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "notebooks/" in result.output and f"DEXDB_CATALOG={catalogs}" in result.output
