"""The ``embassy-cleanup`` command.

``demo`` runs a small bot job against a built-in local page inside
``ChromeUltraAggressiveCleanup`` and prints the cleanup report; it exits 0
when the teardown was verified clean, 1 if anything was left.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from . import __version__
from ._errors import EmbassyCleanupError
from ._presets import DEFAULT_PRESET, PRESETS
from ._report import CleanupReport


def render_report(report: CleanupReport) -> str:
    """The report as a readable table: stages, durations, what was done."""
    rows = [("stage", "ms", "signalled", "removed", "details")]
    for s in report.stages:
        detail = s.skipped_reason and f"skipped: {s.skipped_reason}" or "; ".join(s.notes)
        if s.errors:
            detail = (detail + "; " if detail else "") + "errors: " + "; ".join(s.errors)
        rows.append(
            (s.stage.value, f"{s.duration_s * 1000:.1f}", str(len(s.killed)), str(len(s.removed)), detail)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(c.ljust(w) if j != 1 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
            + "  "
            + r[4]
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    killed = [a for a in report.killed if a.outcome in ("terminated", "killed")]
    lines.append("")
    lines.append(
        f"processes signalled: {len(killed)}"
        + (" (" + ", ".join(f"{a.pid} {a.name}: {a.outcome}" for a in killed) + ")" if killed else "")
    )
    lines.append(
        f"paths removed:       {len(report.removed)}"
        + (" (" + ", ".join(report.removed) + ")" if report.removed else "")
    )
    lines.append(
        f"leftovers:           {len(report.leftovers)}"
        + (" (" + ", ".join(str(lo) for lo in report.leftovers) + ")" if report.leftovers else "")
    )
    lines.append(
        f"result:              {'CLEAN' if report.ok else 'LEAKED'} "
        f"in {report.duration_s * 1000:.0f} ms ({report.passes} pass(es))"
    )
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import bot_job, serve_page
    from ._session import ChromeUltraAggressiveCleanup

    session = ChromeUltraAggressiveCleanup(
        headless=not args.headed,
        preset=args.preset,
        graceful=not args.fast,
        cleanup_timeout=args.cleanup_timeout,
    )
    # With --json, stdout carries the JSON alone; progress goes to stderr.
    out = sys.stderr if args.json else sys.stdout
    with serve_page() as url:
        print(f"demo: serving the built-in page at {url}", file=out)
        with session as driver:
            print(
                f"demo: session {session.session_id} started "
                f"{len(session.pids)} process(es) in {session.root}",
                file=out,
            )
            outcome = bot_job(driver, url)
            print(f"demo: page title: {outcome['title']!r}", file=out)
            print(f"demo: form result: {outcome['result']!r}", file=out)
    report = session.report
    assert report is not None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print()
        print(render_report(report))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embassy-cleanup",
        description="Chrome under Selenium that leaves nothing behind.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v: INFO, -vv: DEBUG, per stage)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run a demo bot job on a built-in local page and print its cleanup report",
        description="Serve a built-in page on 127.0.0.1, open it in a session, read the title, "
        "fill a form, click, read the result, then print the cleanup report. "
        "Exit status: 0 clean, 1 leftovers, 2 usage or start-up error.",
    )
    demo.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help=f"footprint preset (default: {DEFAULT_PRESET})",
    )
    demo.add_argument("--fast", action="store_true", help="skip driver.quit() (graceful=False)")
    demo.add_argument("--headed", action="store_true", help="show the browser window")
    demo.add_argument(
        "--cleanup-timeout", type=float, default=10.0, metavar="SECONDS", help="teardown budget (default: 10)"
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
    try:
        return int(args.func(args))
    except EmbassyCleanupError as err:
        print(f"embassy-cleanup: error: {err}", file=sys.stderr)
        return 2
