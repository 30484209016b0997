"""The ``infrakit`` command, one module per command family, without import cycles.

``app`` builds the parser from each family's ``register`` and runs ``main``; the families are
``plugin`` (run, start, stop, ls), ``up``, ``instance``, ``flavor``, ``group``, ``observe``
(events, manager status), ``selfhost`` and ``completion``; they share ``common`` (the top-level
options, running a command, inputs, outputs, finding a plugin) and ``render`` (tables and
views). Imports go one way: ``app`` → families → ``common``/``render``; ``make lint`` checks it
(``.importlinter``). This file imports nothing at import time (its ``main``, the console
script's entry point, imports what the command needs when called), so importing a family never
drags in the rest.
"""


def main(argv: list[str] | None = None) -> int:
    """The console script's entry point (``infrakit_runtime.cli:main``) and ``python -m infrakit_runtime``'s.

    ``infrakit up`` and ``infrakit plugin ...`` are run with a parser of their own family only:
    the supervisor of ``up`` (or ``plugin start``) and the daemons' process (``plugin run``, which
    ``up`` starts) live for as long as the daemons, and the other commands' modules (rich, the
    render and group views, ...) would stay in their memory for nothing
    (tests/runtime/cli/test_up_footprint.py, test_daemon_footprint.py). The family's parser is
    the one the whole CLI registers, so its help and errors are the same.
    """
    import importlib

    from infrakit_runtime.cli import common  # imported on call: the package itself imports nothing at import time

    command = common.command_of(argv)
    if command not in ("up", "plugin"):
        from infrakit_runtime.cli import app

        return app.main(argv)
    parser, sub = common.top_parser()
    importlib.import_module(f"infrakit_runtime.cli.{command}").register(sub)
    return common.run(parser, argv)
