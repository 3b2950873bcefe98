"""``python -m driftline.cli`` runs the ``driftline`` command line."""

from driftline.cli import main

main()
