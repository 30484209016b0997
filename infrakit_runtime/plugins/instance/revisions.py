"""Revisions by content, for instance plugins that learn their members only by asking.

The file plugin knows when its directory last changed, so it answers "unchanged" without listing
anything. The process plugin (a scan of its records and /proc), the aws plugin (DescribeInstances)
and the selectors (their choices' listings) cannot know that without asking their source. They
still spare their caller the rest of a steady pass: each answer is stamped with a digest of what
it lists, and a caller whose last answer had the same digest gets no list to decode, to judge
or to plan again (``instance.Revised``).

Why a digest is a sound revision: the caller keeps the list its revision was stamped on and uses
it again only while the plugin's answer would be equal to it, member for member (order aside),
which is what "unchanged" promises. Nothing is kept in the plugin, so a restarted plugin answers
the same way, and a digest that happens to repeat after a change and its undoing names a list
equal to the current one. Limit: the plugin still asks its source every pass; only the caller's
share of the pass is saved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable

from infrakit_runtime.spi import instance

# Marks a digest among revisions (the file plugin's start with its run token); a caller never parses them.
PREFIX = "sha256:"


def digest(descriptions: list[instance.Description]) -> str:
    """The revision naming exactly this list of members, whatever order they were listed in."""
    wires = sorted((d.to_wire() for d in descriptions), key=lambda w: str(w.get("ID")))
    body = json.dumps(wires, sort_keys=True, separators=(",", ":"), default=str).encode()
    return PREFIX + hashlib.sha256(body).hexdigest()[:40]


async def listing_since(described: Awaitable[list[instance.Description]], revision: str) -> instance.Listing:
    """``describe_since``'s answer from a fresh listing: no list when ``revision`` names this very list."""
    found = await described
    current = digest(found)
    if revision == current:
        return instance.Listing(revision=current)
    return instance.Listing(revision=current, descriptions=found)
