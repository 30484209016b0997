"""The ``infrakit`` command: its parser, assembled from one module per command family, and ``main``.

Guarantee: errors reach the user as one readable line and a non-zero exit (2 for a usage
mistake, 1 for a plugin's refusal or an unreachable one), never a traceback (``--log-level
debug`` shows the traffic and the details); ``common.run`` does it for every command. Limit:
this module only assembles; it is the one module of the package that imports every command
module, and none imports it (``infrakit up`` and ``infrakit plugin ...`` run without it:
``infrakit_runtime.cli.main``).
"""

from __future__ import annotations

import argparse

from infrakit_runtime.cli import common, completion, flavor, group, instance, observe, plugin, selfhost, up


def build_parser() -> argparse.ArgumentParser:
    p, sub = common.top_parser()
    plugin.register(sub)
    up.register(sub)
    instance.register(sub)
    flavor.register(sub)
    group.register(sub)
    observe.register(sub)
    selfhost.register(sub)
    completion.register(sub, parser=p)
    return p


def main(argv: list[str] | None = None) -> int:
    return common.run(build_parser(), argv)
