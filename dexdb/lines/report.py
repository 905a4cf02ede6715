"""``dexdb report``: one figure per detection, in the spirit of ELiXer's report.

    >>> fig = report_figure("catalogs", 3000000001, pdr1_dir="pdr1")     # doctest: +SKIP
    >>> write_report("catalogs", 3000000001, "report.png")               # doctest: +SKIP

Panels (axes titles in :data:`PANELS`):

* numbers: P(LAE)/P(OII) (combined, near-line and g-band continuum) and P(LAE); detectid, shot, IFU,
  RA/Dec; the refitted line (wavelength, FWHM, flux, S/N) and the catalog's chi^2; continuum near the
  line and in g (and the synthetic g magnitude); observed EW and rest-frame EW if Lyman alpha; z if
  Lyman alpha and if [O II]; the multi-line solution or its absence; the URL of the official ELiXer
  image (the SQL macro ``elixer_url``);
* line: the spectrum +-max(60 Angstrom, 6 sigma) around the line with the fitted Gaussian + continuum;
* spectrum: the whole spectrum and its 1-sigma band, bright night-sky lines shaded
  (:data:`SKY_LINES`), and the expected lines of the hypotheses colour-coded: the best-scoring
  hypotheses (:data:`N_HYPOTHESES` at most, score > 0) plus Lyman alpha and [O II], solid where a line
  matched, dotted where none did;
* cutout (only when the detection's IFU cube is under ``pdr1_dir``): the continuum-subtracted line
  map of the cube around the detection (``dexdb.cube.line_map``, +-5 Angstrom band) with the detection
  marked. The 2-D fibre cutouts and imaging counterparts of ELiXer's report have no source in dexdb.

The numbers are those of ``dexdb classify`` (:func:`dexdb.lines.classify.analyse_spectra` on the same
spectrum, same thresholds), computed again for the one detection, so a report needs no classified
catalog. The spectrum is the detection's ``detection_spectra`` row, else its HPSC2 source's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexdb.constants import WAVE
from dexdb.lines.classify import ClassifyError, analyse_spectra
from dexdb.lines.fit import gaussian
from dexdb.lines.solutions import DEFAULT_THRESHOLDS, Thresholds
from dexdb.lines.table import LYA_NAME, OII_NAME
from dexdb.sqlload import connect

#: Bright night-sky emission in 3470-5540 Angstrom (air; mercury street-lamp lines and [N I]),
#: shaded +-SKY_HALF_WIDTH Angstrom.
SKY_LINES = ((3650.15, "Hg I"), (4046.56, "Hg I"), (4358.34, "Hg I"), (5199.0, "[N I]"), (5460.74, "Hg I"))
SKY_HALF_WIDTH = 5.0
N_HYPOTHESES = 3
PANELS = ("Detection", "Line fit", "Spectrum", "Line map")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
WAVE64 = WAVE.astype(np.float64)


@dataclass(frozen=True)
class Detection:
    """What a report needs from the catalogs about one detection."""

    detectid: int
    shotid: int
    ifuslot: str
    ra: float
    dec: float
    wave: float
    chi2: float
    spec: np.ndarray
    spec_err: np.ndarray
    spectrum_from: str
    elixer_url: str


def load_detection(catalog_dir: str | os.PathLike, detectid: int) -> Detection:
    """The detection ``detectid`` of the catalogs in ``catalog_dir`` with its spectrum."""
    con = connect(catalog_dir)
    try:
        rows = con.sql("SELECT detectid, shotid, ifuslot, ra, dec, wave, chi2, det_type FROM detections "
                       "WHERE detectid = ?", params=[int(detectid)]).fetchall()
        if not rows:
            raise ClassifyError(f"{catalog_dir}: detectid {detectid} is not in detections")
        _, shotid, ifuslot, ra, dec, wave, chi2, det_type = rows[0]
        if det_type != "line":
            raise ClassifyError(f"{catalog_dir}: detectid {detectid} is a {det_type} detection, not an emission line")
        macros = {name for (name,) in con.sql("SELECT function_name FROM duckdb_functions()").fetchall()}
        found, source = None, "detection_spectra"
        if "spectra_by_detectid" in macros:
            found = con.sql("SELECT spec, spec_err FROM spectra_by_detectid([?]) WHERE spec IS NOT NULL",
                            params=[int(detectid)]).fetchall()
        if not found and "spectra_by_source_id" in macros:
            source = "source_spectra"
            found = con.sql("SELECT spec, spec_err FROM spectra_by_source_id("
                            "(SELECT coalesce(list(source_id ORDER BY source_id)[1:1], []::BIGINT[]) FROM sources "
                            " WHERE detectid = ?)) WHERE spec IS NOT NULL", params=[int(detectid)]).fetchall()
        if not found:
            raise ClassifyError(f"{catalog_dir}: detectid {detectid} has no spectrum (neither in detection_spectra "
                                "nor as an HPSC2 source)")
        url = con.sql("SELECT elixer_url(?)", params=[int(detectid)]).fetchall()[0][0]
    finally:
        con.close()
    spec, err = (np.array(v, dtype=np.float64, copy=True) for v in found[0])
    return Detection(int(detectid), int(shotid), str(ifuslot), float(ra), float(dec), float(wave), float(chi2),
                     spec, err, source, url)


def report_figure(catalog_dir: str | os.PathLike, detectid: int, pdr1_dir: str | os.PathLike | None = None,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS):
    """The report of ``detectid`` as a matplotlib Figure (Agg; nothing is shown)."""
    from matplotlib.figure import Figure

    det = load_detection(catalog_dir, detectid)
    analysis = analyse_spectra([det.wave], det.spec[None, :], det.spec_err[None, :], thresholds)
    cube_file = _cube_file(pdr1_dir, det)
    fig = Figure(figsize=(16, 10), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=(1.1, 1.0), width_ratios=(1.6, 1.0, 0.9))
    _numbers(fig.add_subplot(grid[0, 0]), det, analysis, cube_file, pdr1_dir)
    _line(fig.add_subplot(grid[0, 1]), det, analysis)
    if cube_file is not None:
        _cutout(fig.add_subplot(grid[0, 2]), det, analysis, cube_file)
    _spectrum(fig.add_subplot(grid[1, :]), det, analysis)
    return fig


def write_report(catalog_dir: str | os.PathLike, detectid: int, path: str | os.PathLike,
                 pdr1_dir: str | os.PathLike | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Path:
    """Render the report to ``path`` (format from its suffix: png, pdf, svg, jpg), replaced in one rename."""
    path = Path(path)
    fig = report_figure(catalog_dir, detectid, pdr1_dir, thresholds)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    os.replace(tmp, path)
    return path


def _cube_file(pdr1_dir, det: Detection) -> Path | None:
    if pdr1_dir is None:
        return None
    from dexdb.cube import cube_path

    path = cube_path(pdr1_dir, det.shotid, det.ifuslot)
    return path if path.is_file() else None


def _numbers(ax, det: Detection, analysis, cube_file, pdr1_dir) -> None:
    result, plae, main = analysis.classification, analysis.plae, analysis.classification.main
    wave = float(main.wave[0]) if np.isfinite(main.wave[0]) else det.wave
    best = result.best_name(0)
    if best is None:
        solution = "multi-line solution: none (no other line matched)"
    else:
        lines = ", ".join(result.lines.names[result.expected.line[k]] for k in result.solution_lines(0))
        verdict = "accepted" if result.accepted[0] else "not accepted"
        solution = (f"multi-line solution: {best} z = {result.z[0]:.4f} ({verdict})\n"
                    f"   score {result.best_score[0]:.1f}, {100 * result.fraction[0]:.0f}% of all; lines: {lines}")
    lya, oii = (result.lines.rest_wave[result.lines.index(name)] for name in (LYA_NAME, OII_NAME))
    if cube_file is None:
        cube_note = "line map: no cube given (--pdr)" if pdr1_dir is None else "line map: cube not on disk"
    else:
        cube_note = f"line map: {cube_file.name}"
    text = "\n".join([
        f"P(LAE)/P(OII) = {plae.ratio[0]:.3g}   (near-line {plae.ratio_near[0]:.3g}, g band {plae.ratio_g[0]:.3g})",
        f"P(LAE) = {plae.p_lae[0]:.3f}",
        "",
        f"detectid {det.detectid}   shot {det.shotid}   IFU {det.ifuslot}",
        f"RA {det.ra:.6f}   Dec {det.dec:+.6f}   spectrum: {det.spectrum_from}",
        f"wave {wave:.2f} ± {main.wave_err[0]:.2f} Å   FWHM {FWHM_PER_SIGMA * main.sigma[0]:.1f} Å",
        (f"line flux {main.flux[0]:.2f} ± {main.flux_err[0]:.2f} e-17 erg/s/cm²   S/N {main.sn[0]:.1f}   "
         f"catalog χ² {det.chi2:.2f}"),
        (f"continuum near {plae.continuum_near[0]:.3f} ± {plae.continuum_near_err[0]:.3f}, "
         f"g {plae.continuum_g[0]:.3f} ± {plae.continuum_g_err[0]:.3f} e-17 /Å (g = {plae.gmag[0]:.2f})"),
        f"EW obs {plae.ew_near[0]:.1f} Å   EW rest (Lyα) {plae.ew_near[0] * lya / wave:.1f} Å",
        f"z if Lyα {wave / lya - 1:.4f}   z if [O II] {wave / oii - 1:.4f}",
        solution,
        cube_note,
        "ELiXer report image:",
        f" {det.elixer_url}",
    ])  # fmt: skip
    ax.set_axis_off()
    ax.set_title(f"{PANELS[0]} {det.detectid}")
    ax.text(0.0, 1.0, text, va="top", ha="left", family="monospace", fontsize=8.5, transform=ax.transAxes, wrap=True)


def _line(ax, det: Detection, analysis) -> None:
    main = analysis.classification.main
    centre = float(main.wave[0]) if np.isfinite(main.wave[0]) else det.wave
    sigma = float(main.sigma[0]) if np.isfinite(main.sigma[0]) else 3.0
    half = max(60.0, 6.0 * sigma)
    near = np.abs(WAVE64 - centre) <= half
    ax.errorbar(WAVE64[near], det.spec[near], yerr=det.spec_err[near], fmt=".", color="k", ms=3, lw=0.6,
                label="spectrum")
    if np.isfinite(main.flux[0]):
        x = np.linspace(centre - half, centre + half, 600)
        ax.plot(x, gaussian(x, main.flux[0], centre, sigma) + main.continuum[0], color="C3", label="Gaussian fit")
    ax.axvline(det.wave, color="0.5", ls=":", lw=0.8, label="catalog wave")
    ax.set_title(PANELS[1])
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("1e-17 erg/s/cm²/Å")
    ax.legend(fontsize=7)


def _spectrum(ax, det: Detection, analysis) -> None:
    result = analysis.classification
    ax.fill_between(WAVE64, det.spec - det.spec_err, det.spec + det.spec_err, color="0.8", lw=0, label="±1σ")
    ax.plot(WAVE64, det.spec, color="k", lw=0.6)
    for wave, _ in SKY_LINES:
        ax.axvspan(wave - SKY_HALF_WIDTH, wave + SKY_HALF_WIDTH, color="C0", alpha=0.15, lw=0)
    ax.axvspan(np.nan, np.nan, color="C0", alpha=0.15, label="sky lines")
    top = ax.get_ylim()[1]
    for colour, h in enumerate(_shown_hypotheses(result)):
        z = result.z_hypotheses[0, h]
        matched = set(result.expected.line[result.solution_lines(0, h)].tolist())
        pick = np.flatnonzero((result.expected.detection == 0) & (result.expected.hypothesis == h))
        label = f"{result.lines.labels[h]} z={z:.3f} (score {result.scores[0, h]:.1f})"
        ax.plot([], [], color=f"C{colour + 1}", label=label)
        for k in pick:
            line = result.expected.line[k]
            style, alpha = ("-", 1.0) if line in matched else (":", 0.6)
            ax.axvline(result.expected.wave[k], color=f"C{colour + 1}", ls=style, lw=1.0, alpha=alpha)
            ax.text(result.expected.wave[k], top, result.lines.labels[line], rotation=90, va="top", ha="right",
                    fontsize=6, color=f"C{colour + 1}")
    ax.axvline(det.wave, color="C3", lw=1.5)
    ax.set_xlim(WAVE64[0], WAVE64[-1])
    ax.set_title(PANELS[2])
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("1e-17 erg/s/cm²/Å")
    ax.legend(fontsize=7, loc="upper right", ncol=2)


def _shown_hypotheses(result) -> list[int]:
    scored = [int(h) for h in np.argsort(-result.scores[0], kind="stable") if result.scores[0, h] > 0][:N_HYPOTHESES]
    for name in (LYA_NAME, OII_NAME):
        h = result.lines.index(name)
        if h not in scored and np.isfinite(result.z_hypotheses[0, h]):
            scored.append(h)
    return scored


def _cutout(ax, det: Detection, analysis, cube_file: Path) -> None:
    from dexdb.cube import cutout, line_map, open_cube

    main = analysis.classification.main
    centre = float(main.wave[0]) if np.isfinite(main.wave[0]) else det.wave
    with open_cube(cube_file) as cube:
        small = cutout(cube, det.ra, det.dec, size=20.0, wave_range=(centre - 80.0, centre + 80.0))
        if small is None:
            ax.set_axis_off()
            ax.set_title(f"{PANELS[3]}: the detection is off its cube")
            return
        image = line_map(small, centre).image
        (x,), (y,) = small.pixel(det.ra, det.dec)
    ax.imshow(image, origin="lower", cmap="viridis")
    ax.plot([x], [y], marker="+", color="w", ms=14, mew=1.5)
    ax.set_title(f"{PANELS[3]} {centre:.1f} Å ±5 Å")
    ax.set_xlabel("x (spaxel)")
    ax.set_ylabel("y (spaxel)")
