"""``infrakit completion bash|zsh``: a shell completion script generated from the parser itself.

Guarantee: the script is derived from the same ``argparse`` tree ``infrakit`` parses with, so
every command, action, option and option choice it offers exists (a test completes with it in
a real bash). Group IDs (arguments marked by ``common.completes_group_ids``) are asked of the
manager at completion time with ``infrakit group ls -q``, passing on the line's ``--config`` and
``--plugin``; with no manager answering within ``LIVE_TIMEOUT`` nothing is offered. Limit: other
values, such as file names, are left to the shell's defaults.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from infrakit_runtime import config
from infrakit_runtime.cli.common import GROUP_IDS

SHELLS = ("bash", "zsh")
# Seconds a completion waits for the manager's list of groups before offering nothing.
LIVE_TIMEOUT = 5


def register(sub: Any, *, parser: argparse.ArgumentParser) -> None:
    """Add ``completion``; ``parser`` is the whole command line the script will complete."""
    c = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a completion script: eval \"$(infrakit completion bash)\" in ~/.bashrc, "
                       "or eval \"$(infrakit completion zsh)\" in ~/.zshrc.")
    c.add_argument("shell", choices=SHELLS)
    c.set_defaults(func=lambda args, cfg: cmd_completion(args, cfg, parser=parser))


def cmd_completion(args: argparse.Namespace, cfg: config.Config, *, parser: argparse.ArgumentParser) -> int:
    print(script(parser, shell=args.shell), end="")
    return 0


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def tree(parser: argparse.ArgumentParser) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per command path (``"infrakit"``, ``"infrakit group"``, ``"infrakit group describe"``): the words
    that may follow it, and per ``"path|option"`` the values an option accepts."""
    words: dict[str, list[str]] = {}
    choices: dict[str, list[str]] = {}

    def walk(path: str, p: argparse.ArgumentParser) -> None:
        subs = _subparsers(p)
        options: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            options.extend(action.option_strings)
            if action.choices is not None and action.option_strings:
                for flag in action.option_strings:
                    choices[f"{path}|{flag}"] = [str(c) for c in action.choices]
            elif action.choices is not None and not action.option_strings and not subs:
                options.extend(str(c) for c in action.choices)
        words[path] = [*sorted(subs), *options]
        for name, child in subs.items():
            walk(f"{path} {name}", child)

    walk(parser.prog, parser)
    return words, choices


def live(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Values asked of the manager at completion time: per command path whose first positional is
    marked, and per ``"path|option"`` whose value is marked, the completer's name (``group-ids``)."""
    found: dict[str, str] = {}

    def walk(path: str, p: argparse.ArgumentParser) -> None:
        first = True
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(f"{path} {name}", child)
                continue
            completer = getattr(action, "completer", None)
            if action.option_strings:
                found.update({f"{path}|{flag}": completer for flag in action.option_strings if completer})
            elif first:
                first = False
                if completer:
                    found[path] = completer

    walk(parser.prog, parser)
    return found


def valued_options(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Per command path, the options that take a value (so the word after one is not a positional)."""
    found: dict[str, list[str]] = {}

    def walk(path: str, p: argparse.ArgumentParser) -> None:
        found[path] = sorted(flag for action in p._actions if action.option_strings and action.nargs != 0
                             for flag in action.option_strings)
        for name, child in _subparsers(p).items():
            walk(f"{path} {name}", child)

    walk(parser.prog, parser)
    return found


# Asks the manager for its groups, with the --config and --plugin given earlier on the line.
_GROUP_IDS_FUNCTION = f"""_infrakit_group_ids() {{
    local top=() grp=() run=() i
    for ((i = 1; i < COMP_CWORD - 1; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --config) top+=(--config "${{COMP_WORDS[i+1]}}") ;;
            --plugin) grp+=(--plugin "${{COMP_WORDS[i+1]}}") ;;
        esac
    done
    if command -v timeout >/dev/null 2>&1; then run=(timeout {LIVE_TIMEOUT}); fi
    "${{run[@]}}" "${{COMP_WORDS[0]}}" "${{top[@]}}" group "${{grp[@]}}" ls -q 2>/dev/null
}}
"""

# Walks the line to the deepest command, counts the positionals given after it (skipping option
# values), then offers: an option's choices, live group IDs, or the command's next words.
_COMPLETE_BODY = f"""    local path=infrakit word i at=0 n=0 skip=0 cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ -n "${{next["$path $word"]+set}}" ]]; then path="$path $word"; at=$i; fi
    done
    for ((i = at + 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        if [[ "$word" == -* ]]; then
            if [[ " ${{takes[$path]}} " == *" $word "* ]]; then skip=1; fi
            continue
        fi
        n=$((n + 1))
    done
    if [[ -n "${{values["$path|$prev"]+set}}" ]]; then
        COMPREPLY=($(compgen -W "${{values["$path|$prev"]}}" -- "$cur"))
    elif [[ "${{live["$path|$prev"]}}" == {GROUP_IDS} ]]; then
        COMPREPLY=($(compgen -W "$(_infrakit_group_ids)" -- "$cur"))
    elif ((skip == 0 && n == 0)) && [[ "$cur" != -* && "${{live[$path]}}" == {GROUP_IDS} ]]; then
        COMPREPLY=($(compgen -W "$(_infrakit_group_ids)" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "${{next[$path]}}" -- "$cur"))
    fi
"""


def script(parser: argparse.ArgumentParser, *, shell: str) -> str:
    words, choices = tree(parser)

    def table(name: str, entries: dict[str, list[str]]) -> str:
        rows = "".join(f"        [{shlex.quote(k)}]={shlex.quote(' '.join(v))}\n" for k, v in sorted(entries.items()))
        return f"    local -A {name}=(\n{rows}    )\n"

    body = (
        "# infrakit completion (generated by `infrakit completion`)\n"
        + _GROUP_IDS_FUNCTION
        + "_infrakit_complete() {\n"
        + table("next", words) + table("values", choices) + table("takes", valued_options(parser))
        + table("live", {k: [v] for k, v in live(parser).items()})
        + _COMPLETE_BODY
        + "}\n"
        "complete -o default -F _infrakit_complete infrakit\n"
    )
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body
