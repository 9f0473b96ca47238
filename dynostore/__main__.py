"""``python -m dynostore`` runs the command-line interface."""

from dynostore.cli import main

raise SystemExit(main())
