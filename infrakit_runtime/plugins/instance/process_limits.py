"""How much argument and environment text Linux lets a process start with, checked before it is accepted.

Guarantee: a Command or Env that ``execve`` would refuse with E2BIG ("Argument list too
long") is refused at Validate, naming the field, so it is never committed. Linux has two
limits: one string (an argument, or ``NAME=value``) may hold at most MAX_ARG_STRLEN bytes
with its NUL (32 pages: 128 KiB with 4 KiB pages), and all strings together, with one
pointer each and the program's path, at most a quarter of the stack limit, capped at 6 MiB
and at least 128 KiB (``getconf ARG_MAX`` shows the same quarter).
Limit: Validate sees the Properties only; the flavor's Init script and the tags are known at
Provision, which checks the exact argv and environment again before starting anything. A
``#!`` script re-adds its interpreter's path: ``HEADROOM`` leaves room for it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping, Sequence

from infrakit_runtime.spi.common import ValidationError

# include/uapi/linux/binfmts.h: MAX_ARG_STRLEN = PAGE_SIZE * 32; fs/exec.c caps the total at _STK_LIM / 4 * 3.
MAX_ARG_STRLEN = os.sysconf("SC_PAGE_SIZE") * 32
_STACK_CAP = 6 * 1024 * 1024
_ARG_MIN = 128 * 1024  # the kernel's ARG_MAX constant: the total is never below it
POINTER = 8
HEADROOM = 4096  # the program's resolved path, a script's interpreter line


def arg_max() -> int:
    """Bytes all argument and environment strings of a new process may take here (what exec enforces)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    quarter = _STACK_CAP if soft == resource.RLIM_INFINITY else min(soft // 4, _STACK_CAP)
    return max(quarter, _ARG_MIN)


def string_problem(field: str, text: str) -> str | None:
    """Why one argument or ``NAME=value`` string cannot be passed to a process, or None."""
    size = len(os.fsencode(text)) + 1
    if size <= MAX_ARG_STRLEN:
        return None
    return (f"{field} is {size} bytes; Linux passes at most {MAX_ARG_STRLEN} bytes per argument or variable "
            f"(MAX_ARG_STRLEN, with the name and a NUL), so the process could never start")


def check_total(argv: Sequence[str], env: Mapping[str, str], *, fields: Mapping[str, int] | None = None,
                extra: int = 0) -> None:
    """Raise ``ValidationError`` unless ``argv`` and ``env`` fit in ``arg_max()``.

    ``fields`` sizes the parts the user wrote (``Env.X``: bytes) to name the largest in the
    error; ``extra`` reserves bytes for variables added later (the plugin's own).
    """
    strings = [os.fsencode(a) for a in argv] + [os.fsencode(f"{k}={v}") for k, v in env.items()]
    total = sum(len(s) + 1 for s in strings) + POINTER * (len(strings) + 1) + HEADROOM + extra
    limit = arg_max()
    if total <= limit:
        return
    largest = ", ".join(f"{name} ({size} bytes)" for name, size in
                        sorted((fields or {}).items(), key=lambda kv: -kv[1])[:3])
    raise ValidationError(
        f"Command and Env together need {total} bytes with the daemon's environment and the plugin's variables, "
        f"over the {limit} bytes a process may start with here (ARG_MAX: a quarter of the stack limit, at most "
        f"6 MiB), so the process could never start" + (f"; the largest: {largest}" if largest else ""))
