"""Emission-line classification at catalog scale, in the spirit of HETDEX's ELiXer.

* :mod:`dexdb.lines.table`: the line table (``lines.csv``), the one home of every rest wavelength;
* :mod:`dexdb.lines.fit`: Gaussian line fits over many spectra at once;
* :mod:`dexdb.lines.solutions`: multi-line redshift solutions, their scores and acceptance;
* :mod:`dexdb.lines.plae`: P(LAE)/P(OII) after Leung et al. (2017);
* :mod:`dexdb.lines.classify`: ``dexdb classify``, the ``line_solutions`` catalog;
* :mod:`dexdb.lines.report`: ``dexdb report``, one figure per detection;
* :mod:`dexdb.lines.reference`: a plain per-spectrum implementation, the tests' and benchmark's baseline.

This package imports nothing at load time: :mod:`dexdb.constants` reads the line table through it.
"""
