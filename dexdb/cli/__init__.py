"""The ``dexdb`` command line: one group; each module of this package contributes its ``commands``."""

from __future__ import annotations

import click

from dexdb import __version__
from dexdb.cli import build, classify, cube, query


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dexdb")
def main() -> None:
    """dexdb: HETDEX PDR1 as HEALPix-partitioned Parquet, queried with DuckDB.

    \b
    Start here:
      dexdb demo                      # mock release -> summary, in ./dexdb-demo
      dexdb mock pdr1 --scale small   # a mock PDR1 tree to experiment with
    """


for _module in (build, cube, query, classify):
    for _command in _module.commands:
        main.add_command(_command)
