"""A faithful mock of HETDEX PDR1: same files, formats and quirks, plausible and consistent content."""

from dexdb.mock.generate import MockError, generate
from dexdb.mock.scales import SCALES, Scale

__all__ = ["MockError", "SCALES", "Scale", "generate"]
