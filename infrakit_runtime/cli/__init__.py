"""The ``infrakit`` command, one module per command family, without import cycles.

``app`` builds the parser from each family's ``register`` and runs ``main``; the families are
``plugin`` (run, start, stop, ls, up), ``instance``, ``flavor``, ``group``, ``observe`` (events,
manager status), ``selfhost`` and ``completion``; they share ``common`` (inputs, outputs, finding a plugin) and
``render`` (tables and views). Imports go one way: ``app`` → families → ``common``/``render``;
``make lint`` checks it (``.importlinter``). This file imports nothing at import time (its
``main``, the console script's entry point, imports ``app`` when called), so importing a family
never drags in the rest.
"""


def main(argv: list[str] | None = None) -> int:
    """The console script's entry point (``infrakit_runtime.cli:main``), kept for existing installs."""
    from infrakit_runtime.cli import app  # imported on call: the package itself imports nothing at import time

    return app.main(argv)
