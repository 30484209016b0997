"""What a PromQL expression reads, and what a scrape offers: enough to check dashboards and alert rules.

Not a PromQL parser: it removes strings, label matchers, ranges, grouping clauses and
Grafana variables, then takes every remaining identifier that is not a function call or a
keyword as a metric name. Good for the expressions we write; a name it misses is a name the
checks below would miss, so the tests of this module pin its behaviour.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "atan2", "inf", "nan"}
# Series Prometheus makes itself for every target; no daemon exports them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRINGS.sub('""', expr)
    text = _VARIABLES.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape of ``text`` can hold, labelled families with no samples yet included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update(family.name + suffix for suffix in ("", "_sum", "_count"))
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
        names.update(s.name for s in family.samples)
    return names
