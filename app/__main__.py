"""`python -m sluiceway.app`: the same as the `sluiceway` command."""

from sluiceway.app.cli import main

raise SystemExit(main())
