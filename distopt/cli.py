"""The ``distopt`` command: run a study file, resume a store, show a front.

Bad input ends with exit status 2 and one line naming the field and the fix; Ctrl-C closes the
store and prints how to resume (exit status 130; SIGTERM: 143); a full disk or a dead Ray closes
it too and says how to resume in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from ._errors import DistoptError
from .trial import CONFIG_PREFIX, Status, status_counts


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bad input (its usage lines pushed
    the error below a screenful of options); ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    verbosity = _Parser(add_help=False)
    verbosity.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS,
                           help="print only errors (no progress bar, no Ray output)")
    verbosity.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="print distopt's and Ray's info and warnings (-vv: debug)")
    parser = _Parser(prog="distopt", description=__doc__.splitlines()[0], parents=[verbosity])
    parser.add_argument("--version", action="version", version=f"distopt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[verbosity], **kwargs)

    run = command("run", help="run the search a study YAML describes")
    run.add_argument("study", metavar="STUDY.yaml")
    _run_options(run)
    run.add_argument("--strategy", help="random, bayes, pareto, tpe or jacobian")
    run.add_argument("--seed", type=int)

    resume = command("resume", help="continue the search recorded in a store")
    resume.add_argument("store", metavar="STORE")
    _run_options(resume, store=False)

    show = command("show", help="print the feasible Pareto front and hypervolume")
    show.add_argument("store", metavar="STORE")
    show.add_argument("--format", choices=("table", "csv", "json"), default="table")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true",
                       help="print every trial with its status and error, not only the front")
    which.add_argument("--failed", action="store_true",
                       help="print the FAILED and TIMEOUT trials with their error")

    plot = command("plot", help="write the store's plots (front, hypervolume, ...) "
                                            "as image files")
    plot.add_argument("store", metavar="STORE")
    plot.add_argument("--out", default="plots", metavar="DIR", help="folder for the files "
                                                                     "(default: plots)")
    plot.add_argument("--format", choices=("png", "svg", "pdf"), default="png")

    dashboard = command("dashboard", help="keep an Optuna storage in sync with a store (a "
                                          "running search too) and serve optuna-dashboard")
    dashboard.add_argument("store", metavar="STORE")
    dashboard.add_argument("--storage", metavar="URL", help="Optuna storage (default: sqlite "
                           "file STORE.optuna.db beside the store)")
    dashboard.add_argument("--study-name", help="default: the store folder's name")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.add_argument("--interval", type=float, default=1.0, help="seconds between syncs")
    dashboard.add_argument("--once", action="store_true", help="sync once and exit")
    return parser


def _run_options(parser: argparse.ArgumentParser, *, store: bool = True) -> None:
    parser.add_argument("--budget", type=int, help="total finished trials wanted in the store")
    parser.add_argument("--workers", type=int, help="trials run at once")
    if store:
        parser.add_argument("--store", help="store folder, relative to the working directory "
                                            "(default: the study file's store)")
    parser.add_argument("--address", help="Ray cluster to join, e.g. auto (default: local Ray)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run(args: argparse.Namespace) -> int:
    from ._studyfile import load_study_file

    overrides = {"store": args.store, "strategy": args.strategy, "seed": args.seed}
    study_file = load_study_file(args.study, **overrides)
    return _optimize(study_file, args)


def _resume(args: argparse.Namespace) -> int:
    from ._front import user_ref_point
    from ._studyfile import study_from_dict
    from .store import read_metadata

    metadata = read_metadata(Path(args.store))
    study_path = metadata.get("study_file")
    base = Path(study_path).parent if study_path else None  # its objective may live there
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
    ref_point = user_ref_point(metadata)  # an inferred point is inferred again, not imposed
    if ref_point is not None:
        data["ref_point"] = ref_point
    study_file = study_from_dict(data, base=base)
    return _optimize(study_file, args)


def _optimize(study_file: Any, args: argparse.Namespace) -> int:
    from ._faults import Terminated, guard, resume_hint

    store = study_file.study.store_path
    stored = _stored_trials(store)
    try:
        with guard(store):  # SIGTERM, a full disk, a dead Ray: the store closed, resumable
            reader = _nothing_to_run(study_file, args, stored) or study_file.optimize(
                budget=args.budget, workers=args.workers, address=args.address,
                progress=_progress_wanted(args))
    except KeyboardInterrupt as stop:
        cause = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"\n{cause}: {resume_hint(store)}", file=sys.stderr)   # no store yet: run again
        return 143 if isinstance(stop, Terminated) else 130
    except DistoptError:
        _print_failures(store, stored)  # what the trials did, before the error line
        raise
    _print_failures(store, stored)
    _print_front(reader, "table", show_all=False)
    return 0


def _nothing_to_run(study_file: Any, args: argparse.Namespace, stored: int) -> Any:
    """The store's reader, after saying so, when it already holds the budget (no Ray started;
    ``Study.optimize`` says the same to API users, this prints the front after it)."""
    from ._budget import Budget
    from ._preflight import study_difference
    from ._study import check_run_settings
    from ._summary import no_trial_completed_error
    from .store import open_store, settle

    budget = args.budget if args.budget is not None else study_file.run.get("budget")
    if not isinstance(budget, int) or budget < 1 or stored < budget:
        return None  # a bad budget is the run's to refuse, with its own message
    # bad run settings are refused here as a run would refuse them, though none starts
    given = {"budget": budget, "workers": args.workers, "address": args.address}
    check_run_settings(**{**study_file.run, **{k: v for k, v in given.items() if v is not None}})
    reader = open_store(study_file.study.store_path)
    if study_difference(reader.metadata, {"problem": study_file.study.problem.to_dict()}):
        return None  # a different study: the run refuses it with the difference
    print(Budget(budget, stored=stored).nothing_to_run(), file=sys.stderr)
    settle(reader.path)  # what a killed search left unpublished, for DuckDB, polars, pyarrow
    failure = no_trial_completed_error(reader, budget)  # a store of failures only
    if failure is not None:
        raise failure
    return reader


def _progress_wanted(args: argparse.Namespace) -> bool:
    from ._logging import verbosity

    return not args.no_progress and verbosity() >= 0


def _stored_trials(store: Any) -> int:
    """Trials in ``store`` before a run (0 for a new or unreadable one)."""
    from .store import open_store

    if not (Path(store) / "study.json").is_file():
        return 0
    try:
        return open_store(store).trials().num_rows
    except (DistoptError, OSError, ValueError):
        return 0


def _print_failures(store: Any, stored: int) -> None:
    """After a run: the failure summary on stderr when trials failed (nothing when none did)."""
    from ._summary import report_of

    if _stored_trials(store) <= stored:  # this run finished no trial (e.g. bad input)
        return
    from .store import open_store

    report = report_of(open_store(store))
    if report.n_failed:
        print(report.summary(), file=sys.stderr)


def _show(args: argparse.Namespace) -> int:
    from .store import open_store

    view = "failed" if args.failed else "all" if args.all else "front"
    _print_front(open_store(args.store), args.format, show_all=args.all, view=view)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .store import open_store

    reader = open_store(args.store)
    try:
        from . import plot  # lazy: matplotlib is only needed here
    except ImportError as error:
        raise DistoptError(f"distopt plot needs matplotlib ({error}); pip install matplotlib") \
            from None
    try:  # every plot is about the front: empty axes help no one
        plot.require_trials(reader, feasible=True)
    except ValueError as error:
        raise DistoptError(str(error)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DistoptError(f"--out: {out} is a file; name a folder (it is created if missing)")
    try:
        written = plot.save_all(reader, out, fmt=args.format)
    except OSError as error:  # e.g. a parent that is a file, or no permission
        raise DistoptError(f"--out: cannot write plots into {out} ({error.strerror}); name a "
                           f"folder you can write to") from None
    for path in written:
        print(path)
    return 0


def _view(reader: Any, view: str) -> Any:
    """The rows and columns of one ``show`` view: the front, all trials, or the failed ones."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._summary import error_cause

    if view == "front":
        table = reader.pareto_front()
    else:
        table = reader.trials()
        if view == "failed":
            failures = pa.array([s.value for s in Status if s.counts_as_failure])
            table = table.filter(pc.is_in(table["status"], failures))
    wanted = ["trial_id"] if view == "front" else ["trial_id", "status"]
    wanted += [c for c in table.column_names if c.startswith(CONFIG_PREFIX)]
    wanted += [m for m in reader.problem.metric_names if m in table.column_names]
    if view == "front":
        return table.select(wanted)
    causes = pa.array([error_cause(e) for e in table["error"].to_pylist()], pa.string())
    return table.select(wanted).append_column("error", causes)


def _print_front(reader: Any, fmt: str, *, show_all: bool, view: str | None = None) -> None:
    view = view or ("all" if show_all else "front")
    reader = reader.snapshot()  # one read: the rows, counts and hypervolume of a live store agree
    table = _view(reader, view)
    hv = reader.hypervolume()
    if fmt == "json":
        counts = reader.trials()["status"].value_counts().to_pylist()
        print(json.dumps({"hypervolume": hv, "ref_point": reader.ref_point_in_use(),
                          "ref_point_recorded": reader.ref_point is not None,
                          "trials": {c["values"]: c["counts"] for c in counts},
                          "front" if view == "front" else "rows": table.to_pylist()},
                         default=str))
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    _print_table(table)
    status = status_counts(reader.trials()["status"].to_pylist()) or "none yet"
    # every trial is a row of the "all" view: its counts say it once, not "6 rows | 6 COMPLETE"
    head = (f"trials: {table.num_rows} rows ({status})" if view == "all" else
            f"{'Pareto front' if view == 'front' else 'failed trials'}: {table.num_rows} rows"
            f"  |  trials: {status}")
    ref, in_use = reader.ref_point, reader.ref_point_in_use()
    # recorded once a search has 2(d+1) feasible trials; until then each call infers its own
    origin = (f"ref_point {ref}" if ref is not None else
              f"ref_point {in_use}, inferred from this front: none recorded yet"
              if in_use is not None else "no ref_point: no feasible trial yet")
    print(f"\n{head}  |  hypervolume: {hv:.6g}  ({origin})")


def _print_table(table: Any) -> None:
    """Right-aligned columns; the error text, last and free-form, is left-aligned and uncut."""
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    header = [c.removeprefix(CONFIG_PREFIX) for c in table.column_names]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    last = len(header) - 1 if header[-1] == "error" else None  # not False: False == 0

    def line(cells: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == last else v.rjust(w)
                         for i, (v, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    print(line(header))
    for row in rows:
        print(line(row))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _check_storage(url: str) -> None:
    """Open ``--storage`` once, so that a URL Optuna cannot use is one line, not a traceback."""
    import optuna
    import sqlalchemy.exc

    try:
        optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        cause = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise DistoptError(f"--storage: Optuna cannot open {url} ({cause}); give an SQLAlchemy "
                           f"URL it can write, e.g. sqlite:///runs/study.optuna.db") from None


def _dashboard(args: argparse.Namespace) -> int:
    import threading

    from ._checks import check_int, check_number
    from ._logging import verbosity
    from .interop import optuna as interop

    check_int("--port", args.port, 0, maximum=65535)
    check_number("--interval", args.interval, 0.0)
    if verbosity() < 0:  # -q: errors only, so not Optuna's "A new study created" either
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(args.store)
    where = path.resolve()  # "." names its folder
    url = args.storage or f"sqlite:///{where.parent / (where.name + '.optuna.db')}"
    from .store import open_store

    reader = open_store(path)  # a bad store fails here, before the storage is created
    _check_storage(url)
    added = interop.sync_store(reader, url, study_name=args.study_name)
    print(f"{added} new trials synced to {url}", flush=True)   # flushed: a pipe may be watching
    if args.once:
        return 0
    try:
        server = interop.dashboard_server(url, args.host, args.port)
    except ImportError:
        print(f"optuna-dashboard is not installed (pip install optuna-dashboard); following the "
              f"store, start it with\n  optuna-dashboard {url} --host {args.host} "
              f"--port {args.port}\nCtrl-C to stop", flush=True)
        try:
            interop.follow(path, url, args.interval, study_name=args.study_name)
        except KeyboardInterrupt:
            pass
        return 0
    stop, failed = threading.Event(), []

    def sync() -> None:
        try:
            interop.follow(path, url, args.interval, stop, study_name=args.study_name)
        except Exception as error:  # shown, and the server stops: stale pages would mislead
            failed.append(error)
            server.shutdown()

    follower = threading.Thread(target=sync, name="distopt-dashboard-sync", daemon=True)
    follower.start()
    print(f"optuna-dashboard on http://{args.host}:{server.server_port}/dashboard, following "
          f"{path}; Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        follower.join()
    if failed:
        raise DistoptError(f"syncing {path} to {url} failed: {failed[0]}")
    return 0


def console() -> None:
    """The ``distopt`` console script and ``python -m distopt``: exit with :func:`main`'s status.

    A failed run has closed its store and printed its cause; after an infrastructure fault a dead
    Ray's own exit handlers would still end the process with their status (1) while the
    interpreter shuts down, so a failed run ends at once with its own status instead.
    """
    code = main()
    if code != 0:  # the store is closed and the cause printed: nothing left to clean up
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distopt`` console script."""
    args = _parser().parse_args(argv)
    _set_verbosity(args)
    handlers = {"run": _run, "resume": _resume, "show": _show, "plot": _plot,
                "dashboard": _dashboard}
    try:
        with _plain_warnings():
            return handlers[args.command](args)
    except DistoptError as error:
        print(f"distopt: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `distopt show STORE | head` closed the pipe: not an error
        sys.stderr.close()
        return 0


@contextmanager
def _plain_warnings() -> Iterator[None]:
    """Warnings as one line each, ``RuntimeWarning: store runs/s: ...``, each shown once: a
    command-line user needs neither the file and line that warned nor its source line echoed
    under it, nor the same damage once per reader."""
    import warnings

    def one_line(message: Warning | str, category: type[Warning], *args: Any,
                 **kwargs: Any) -> str:
        return f"{category.__name__}: {message}\n"

    shown: set[str] = set()
    show = warnings.showwarning

    def once(message: Warning | str, category: type[Warning], *args: Any,
             **kwargs: Any) -> None:
        # the same damage met by each reader a command opens (resume opens three) is one line
        if f"{category.__name__}: {message}" not in shown:
            shown.add(f"{category.__name__}: {message}")
            show(message, category, *args, **kwargs)

    before, warnings.formatwarning = warnings.formatwarning, one_line
    warnings.showwarning = once
    try:
        yield
    finally:
        warnings.formatwarning, warnings.showwarning = before, show


def _set_verbosity(args: argparse.Namespace) -> None:
    from ._logging import set_verbosity

    set_verbosity(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))


if __name__ == "__main__":
    console()
