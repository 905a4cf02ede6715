"""``dexdb report``: the figure of one detection renders with its panels, from Python and the CLI (the
report draws on a matplotlib Figure of its own, the Agg canvas; no pyplot, no display)."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from dexdb.cli import main
from dexdb.lines.classify import ClassifyError
from dexdb.lines.report import PANELS, report_figure, write_report
from dexdb.sqlload import connect


@pytest.fixture(scope="module")
def detections(tiny_catalogs):
    """An AGN (multi-line) and an LAE of the HPSC2, and a continuum detection."""
    con = connect(tiny_catalogs)
    agn = con.sql("SELECT min(detectid) FROM sources WHERE source_type = 'agn'").fetchall()[0][0]
    lae = con.sql("SELECT min(detectid) FROM sources WHERE source_type = 'lae'").fetchall()[0][0]
    cont = con.sql("SELECT min(detectid) FROM detections WHERE det_type = 'cont'").fetchall()[0][0]
    url = con.sql("SELECT elixer_url(?)", params=[agn]).fetchall()[0][0]
    return agn, lae, cont, url


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_report_with_cube_has_every_panel(tiny_catalogs, tiny_pdr1, detections, tmp_path):
    agn, _, _, url = detections
    fig = report_figure(tiny_catalogs, agn, pdr1_dir=tiny_pdr1)
    assert len(fig.axes) == 4
    first, line, cube_map, spectrum = titles(fig)
    assert (first, line, spectrum) == (f"{PANELS[0]} {agn}", PANELS[1], PANELS[2]) and cube_map.startswith(PANELS[3])
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert url in text and "multi-line solution: Lya" in text and "P(LAE)/P(OII)" in text
    assert fig.axes[2].images and np.isfinite(fig.axes[2].images[0].get_array()).any()
    path = write_report(tiny_catalogs, agn, tmp_path / "agn.png", pdr1_dir=tiny_pdr1)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (1000, 1600) and image[..., :3].std() > 0.05


def test_report_without_cube_leaves_the_map_out(tiny_catalogs, detections):
    _, lae, _, _ = detections
    fig = report_figure(tiny_catalogs, lae)
    assert titles(fig) == [f"Detection {lae}", PANELS[1], PANELS[2]]
    assert "multi-line solution: none" in "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert fig.axes[1].lines and fig.axes[2].lines  # the fit curve, the spectrum


def test_cli_report_and_its_errors(tiny_catalogs, detections, tmp_path):
    agn, _, cont, _ = detections
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(agn), "--catalog", str(tiny_catalogs), "-o", str(tmp_path / "r.pdf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    missing = runner.invoke(main, ["report", "1234567890", "--catalog", str(tiny_catalogs),
                                   "-o", str(tmp_path / "x.png")])
    assert missing.exit_code != 0 and "detectid 1234567890 is not in detections" in missing.output
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ClassifyError, match="is a cont detection"):
        report_figure(tiny_catalogs, cont)
