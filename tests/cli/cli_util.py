"""What the CLI tests share: ``distopt``'s ``main`` run in this process, its output captured."""

from __future__ import annotations

import contextlib
import io

from distopt.cli import main


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``distopt ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
