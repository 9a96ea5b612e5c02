"""The book's command line: ``python -m iteration_order.book <command>``.

One function per command; the work is done by the runner (executing pages), the book check
(`verify`) and the cost model (`costs`). Errors are one paragraph on stderr, never argparse's
usage banner after the fact, and their advice works from the command typed (``make reproduce ...
FORCE=1`` or ``--force``).
"""
from __future__ import annotations

import argparse
import logging
import os

from ..parallel import (ALLOW_LONG_ENV, EXECUTOR_ENV, EXECUTORS, LONG_RUN_HOURS, SHARDS_ENV,
                        run_device)
from ..trajectory import Runtime
from ..devices import DEVICE_FORMS, check_device
from . import runner
from .registry import (PROFILES, RegistryError, default_profile, load_pages,
                       use_default_data_root)
from .studies import check_registry

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m iteration_order.book",
                                  description=runner.__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute pages into book/")
    run.add_argument("--profile", default=None, help=f"one of {', '.join(runner.BOOK_PROFILES)} "
                     "(default: cpu without CUDA, paper with CUDA)")
    run.add_argument("--only", nargs="+", metavar="PAGE", help="only these pages")
    run.add_argument("--jobs", type=int, default=1, help="parallel runs inside a page")
    run.add_argument("--force", action="store_true",
                     help="execute even if up to date, and replace pages executed at another "
                          "profile")
    run.add_argument("--missing", action="store_true",
                     help="only pages that have no executed notebook in book/ yet")
    run.add_argument("--executor", choices=EXECUTORS, default=None,
                     help=f"where a page's runs execute: local processes or Ray tasks (default: "
                          f"${EXECUTOR_ENV}, else local); Ray connects to $RAY_ADDRESS or starts "
                          f"a local instance with --jobs CPUs")
    run.add_argument("--shards", type=int, default=None, metavar="K",
                     help=f"cut each backward-type run into K shards of about equal cost "
                          f"(default: ${SHARDS_ENV}, else 1)")
    run.add_argument("--device", default=None, metavar="DEVICE",
                     help=f"the device of the pages' runs, one of {DEVICE_FORMS} (default: cuda "
                          f"at the paper profile, else auto); without CUDA, cuda pages render "
                          f"from results/*-cuda.json")
    run.add_argument("--allow-long", action="store_true",
                     help=f"consent to runs estimated above {LONG_RUN_HOURS:g} h of wall time "
                          f"(sets ${ALLOW_LONG_ENV}=1 for the page kernels; refused otherwise)")
    params = sub.add_parser("params", help="a page's parameters at a profile, as YAML that "
                            "papermill takes with -f")
    params.add_argument("page")
    params.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    sub.add_parser("list", help="list the pages and their templates")
    sub.add_parser("check", help="check experiments.yml against the templates")
    verify = sub.add_parser("verify", help="check the executed pages in book/ against the "
                            "registry, their templates and the results cache, executing nothing "
                            "(the first half of make check-book)")
    verify.add_argument("--only", nargs="+", metavar="PAGE", help="only these pages")
    sub.add_parser("restamp", help="add the content digest to results/ files written before "
                   "digests existed, each only after it passes every check verify applies")
    sub.add_parser("toc", help="write _toc.yml from the executed pages, and the book's own figures")
    template = sub.add_parser("template", help="re-execute templates at their smoke defaults and "
                              "store the outputs nbval compares")
    template.add_argument("names", nargs="+", metavar="TEMPLATE")
    cost = sub.add_parser("cost", help="estimate the time of the figure pages before running "
                          "anything (pages of the orders template)")
    cost.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} "
                      "(default: cpu without CUDA, paper with CUDA)")
    cost.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    cost.add_argument("--only", nargs="+", metavar="PAGE", help="only these pages")
    cost.add_argument("--jobs", type=int, default=1, help="parallel runs to divide the total by")
    cost.add_argument("--write", action="store_true",
                      help="price every figure page at the quick, cpu and paper profiles and "
                           "store the estimates the page headers quote (results/"
                           "cost-estimates.json)")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        raise SystemExit(f"error: --jobs must be >= 1; got {args.jobs}")
    try:
        COMMANDS[args.command](args)
    except RegistryError as err:  # an unreadable registry: the problem, not a traceback
        raise SystemExit(f"error: {err}") from None
    except (ValueError, RuntimeError) as err:  # one paragraph, without argparse's usage
        raise SystemExit(f"error: {err}") from None


def _list(args) -> None:
    for name, entry in load_pages().items():
        profiles = [p for p in (runner._executed_profile(runner.page_path(name, "cpu")),
                                runner._executed_profile(runner.page_path(name, "paper"))) if p]
        state = f"executed ({', '.join(profiles)})" if profiles else "not executed"
        print(f"{name:<28} {entry['template']:<16} {state}")


def _params(args) -> None:
    print(runner.page_parameters_yaml(args.page, args.profile), end="")


def _template(args) -> None:
    for name in args.names:
        print(f"stored smoke outputs in {runner.refresh_template(name)}")


def _toc(args) -> None:
    print(f"_toc.yml lists {len(runner.write_toc())} executed page(s)")
    runner.write_figures()


def _check(args) -> None:
    problems = check_registry()
    print("\n".join(problems) or "experiments.yml is consistent with the templates")
    raise SystemExit(1 if problems else 0)


def _verify(args) -> None:
    from .verify import verify_book
    problems, notes = verify_book(runner.BOOK, args.only)
    for line in notes + problems:
        print(line)
    if problems:
        raise SystemExit(f"{len(problems)} problem(s) in the executed pages of {runner.BOOK}")
    print(f"every executed page in {runner.BOOK} matches experiments.yml and its template, and "
          f"every result it loads is in the cache")


def _restamp(args) -> None:
    from .verify import restamp_results
    stamped, refused, left = restamp_results(runner.BOOK)
    print(f"{len(stamped)} result file(s) stamped with their content digest")
    for path in refused:
        print(f"refused (fails a check; recompute it): {path}")
    for path in left:
        print(f"left without a digest (no executed page loads it): {path}")
    if refused:
        raise SystemExit(f"{len(refused)} result file(s) refused")


def _cost(args) -> None:
    from .costs import page_costs, render_costs, write_estimates
    profile = args.profile or default_profile()
    use_default_data_root()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    check_device("--device", args.device)  # before torch parses it
    device = run_device(Runtime(device=args.device))  # auto: the one resolver's choice
    if args.write:
        print(f"stored the estimates in {write_estimates(device)}")
        return
    costs, not_covered = page_costs(profile, device, args.only)
    print(render_costs(costs, not_covered, profile, device, args.jobs))


def _run(args) -> None:
    # papermill logs each cell's output (cost tables, finished runs) at INFO: show them
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    if args.allow_long:
        os.environ[ALLOW_LONG_ENV] = "1"  # the page kernels inherit it (parallel.run_many)
    runner.run_pages(args.profile or default_profile(), args.only, args.jobs, args.force,
                     args.missing, args.executor, args.shards, args.device)


COMMANDS = {"list": _list, "params": _params, "template": _template, "toc": _toc,
            "check": _check, "verify": _verify, "restamp": _restamp, "cost": _cost, "run": _run}


if __name__ == "__main__":
    main()
