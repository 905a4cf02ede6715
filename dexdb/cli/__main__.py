"""``python -m dexdb.cli``: the same as the ``dexdb`` command."""

from dexdb.cli import main

main()
