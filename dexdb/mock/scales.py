"""Sizes of the mock PDR1 release."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """How big a mock release is.

    The example shots (the COSMOS AGN epochs, the Lyman-alpha blob, the [OII] galaxy, the test
    cube) are always present; ``survey_shots`` adds random shots spread over the six fields.
    """

    name: str
    survey_shots: int
    ifus_per_shot: tuple[int, int]  # inclusive range for the random shots
    example_ifus_per_shot: int  # IFUs of each example shot (the IFU holding the object among them)
    sources_per_ifu: float  # mean HPSC2 source observations per IFU
    noise_detections_per_ifu: float  # line candidates not in HPSC2 (the bulk of the raw databases)
    repeat_fraction: float  # fraction of random pointings observed more than once
    spectra_per_shot: tuple[int, int] | None  # /Spectra rows per shot, (line, cont); None: all
    cubes_per_shot: int | None  # cubes written per shot besides the example ones (None: all)

    @property
    def spectra_note(self) -> str | None:
        if self.spectra_per_shot is None:
            return None
        line, cont = self.spectra_per_shot
        return f"(mock scale {self.name}: spectra for the first {line} line / {cont} continuum detections of each shot)"


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("tiny", 5, (1, 2), 1, 2.5, 6.0, 0.5, None, None),
        Scale("small", 40, (4, 12), 3, 2.5, 20.0, 0.2, None, 1),
        Scale("medium", 400, (20, 60), 6, 2.5, 60.0, 0.15, (150, 50), 0),
        # Real size: 6,778 shots, 431,713 IFUs, ~1.1M HPSC2 rows, >= 20M raw detections.
        Scale("large", 6765, (49, 78), 12, 2.55, 44.0, 0.12, (24, 8), 0),
    )
}
