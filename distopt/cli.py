"""The ``distopt`` command: run a study file, resume a store, show a front.

Bad input ends with exit status 2 and one line naming the field and the fix; Ctrl-C closes the
store and prints how to resume (exit status 130; SIGTERM: 143); a full disk or a dead Ray closes
it too and says how to resume in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ._errors import DistoptError
from .trial import CONFIG_PREFIX


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distopt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the search a study YAML describes")
    run.add_argument("study", metavar="STUDY.yaml")
    _run_options(run)
    run.add_argument("--strategy", help="random, bayes, pareto, tpe or jacobian")
    run.add_argument("--seed", type=int)

    resume = commands.add_parser("resume", help="continue the search recorded in a store")
    resume.add_argument("store", metavar="STORE")
    _run_options(resume, store=False)

    show = commands.add_parser("show", help="print the feasible Pareto front and hypervolume")
    show.add_argument("store", metavar="STORE")
    show.add_argument("--format", choices=("table", "csv", "json"), default="table")
    show.add_argument("--all", action="store_true", help="print every trial, not only the front")

    plot = commands.add_parser("plot", help="write the store's plots (front, hypervolume, ...) "
                                            "as image files")
    plot.add_argument("store", metavar="STORE")
    plot.add_argument("--out", default="plots", metavar="DIR", help="folder for the files "
                                                                     "(default: plots)")
    plot.add_argument("--format", choices=("png", "svg", "pdf"), default="png")
    return parser


def _run_options(parser: argparse.ArgumentParser, *, store: bool = True) -> None:
    parser.add_argument("--budget", type=int, help="total finished trials wanted in the store")
    parser.add_argument("--workers", type=int, help="trials run at once")
    if store:
        parser.add_argument("--store", help="store folder (default: the study file's)")
    parser.add_argument("--address", help="Ray cluster to join, e.g. auto (default: local Ray)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run(args: argparse.Namespace) -> int:
    from ._studyfile import load_study_file

    overrides = {"store": args.store, "strategy": args.strategy, "seed": args.seed}
    study_file = load_study_file(args.study, **overrides)
    return _optimize(study_file, args)


def _resume(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._studyfile import study_from_dict
    from .store._metadata import read_metadata

    metadata = read_metadata(Path(args.store))
    if metadata.get("objective") is None:
        raise DistoptError(f"{args.store} does not record an importable objective (it was run with "
                           f"a lambda or a function of __main__); resume it from Python with "
                           f"Study(..., store={args.store!r}).optimize(objective, budget=...)")
    problem = metadata["problem"]
    data = {"objective": metadata["objective"], "space": problem["space"],
            "objectives": problem["objectives"], "constraints": problem.get("constraints") or None,
            "strategy": metadata.get("strategy", "random"), "seed": metadata.get("seed", 0),
            "store": args.store, **{k: v for k, v in (metadata.get("run") or {}).items()
                                    if v is not None}}
    if metadata.get("ref_point") is not None:
        data["ref_point"] = metadata["ref_point"]
    study_file = study_from_dict(data)
    return _optimize(study_file, args)


def _optimize(study_file: Any, args: argparse.Namespace) -> int:
    from ._faults import Terminated, guard

    store = study_file.study.store_path
    try:
        with guard(store):  # SIGTERM, a full disk, a dead Ray: the store closed, resumable
            reader = study_file.optimize(budget=args.budget, workers=args.workers,
                                         address=args.address, progress=not args.no_progress)
    except KeyboardInterrupt as stop:
        cause = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"\n{cause}: finished trials are safe in {store}; continue with\n"
              f"  distopt resume {store}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    _print_front(reader, "table", show_all=False)
    return 0


def _show(args: argparse.Namespace) -> int:
    from .store import open_store

    _print_front(open_store(args.store), args.format, show_all=args.all)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .store import open_store

    reader = open_store(args.store)
    try:
        from . import plot  # lazy: matplotlib is only needed here
    except ImportError as error:
        raise DistoptError(f"distopt plot needs matplotlib ({error}); pip install matplotlib") \
            from None
    for path in plot.save_all(reader, args.out, fmt=args.format):
        print(path)
    return 0


def _print_front(reader: Any, fmt: str, *, show_all: bool) -> None:
    table = reader.trials() if show_all else reader.pareto_front()
    problem = reader.problem
    wanted = ["trial_id", "status"] if show_all else ["trial_id"]
    wanted += [c for c in table.column_names if c.startswith(CONFIG_PREFIX)]
    wanted += [m for m in problem.metric_names if m in table.column_names]
    table = table.select(wanted)
    hv = reader.hypervolume()
    counts = reader.trials()["status"].value_counts().to_pylist()
    if fmt == "json":
        print(json.dumps({"hypervolume": hv, "ref_point": reader.ref_point_in_use(),
                          "ref_point_recorded": reader.ref_point is not None,
                          "trials": {c["values"]: c["counts"] for c in counts},
                          "front" if not show_all else "rows": table.to_pylist()}, default=str))
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    header = [c.removeprefix(CONFIG_PREFIX) for c in table.column_names]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    status = ", ".join(f"{c['counts']} {c['values']}" for c in counts)
    label = "trials" if show_all else "Pareto front"
    ref = reader.ref_point  # recorded once a search has 2(d+1) feasible trials
    origin = f"ref_point {ref}" if ref is not None else (
        f"ref_point {reader.ref_point_in_use()}, inferred from this front: none recorded yet")
    print(f"\n{label}: {table.num_rows} rows  |  trials: {status}  |  hypervolume: {hv:.6g}  "
          f"({origin})")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distopt`` console script."""
    args = _parser().parse_args(argv)
    handlers = {"run": _run, "resume": _resume, "show": _show, "plot": _plot}
    try:
        return handlers[args.command](args)
    except DistoptError as error:
        print(f"distopt: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `distopt show STORE | head` closed the pipe: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
