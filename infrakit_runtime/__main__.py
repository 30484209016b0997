"""``python -m infrakit_runtime`` is the ``infrakit`` command."""

from infrakit_runtime.cli import main

raise SystemExit(main())
