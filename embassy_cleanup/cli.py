"""The ``embassy-cleanup`` command: demo, diagnose, clean, stress, watch, script.

Tables and trees use rich on a terminal and plain aligned text otherwise, so
the output pipes and greps cleanly.  Exit status: 0 healthy / done, 1 leaks
found or something could not be cleaned, 2 usage or start-up error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import click

from . import __version__, _launcher
from ._errors import EmbassyCleanupError
from ._presets import DEFAULT_PRESET, PRESETS
from ._report import CleanupReport

EXIT_OK, EXIT_LEAKS, EXIT_USAGE = 0, 1, 2


# -- output ---------------------------------------------------------------
def _is_tty() -> bool:
    return sys.stdout.isatty()


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    if _is_tty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for h in headers:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    click.echo(title)
    if not rows:
        click.echo("  (none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def render_report(report: CleanupReport) -> str:
    """The cleanup report as a readable table: stages, durations, what was done."""
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
        cells = [c.rjust(w) if j == 1 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells) + "  " + r[4])
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


#: --temp-dir of diagnose, clean and watch: one definition, one meaning.
_scope_option = click.option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Only sessions whose dir is in this dir, and Chromium's stale dirs in it (default: every "
    "session of yours, and stale dirs in the system temp dir).",
)


# -- the group --------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="embassy-cleanup", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="Log progress (-v: INFO, -vv: DEBUG, per stage).")
def cli(verbose: int) -> None:
    """Chrome under Selenium that leaves nothing behind.

    Every command is scoped to this library's own sessions unless you ask
    for more (clean --all), and never crosses user boundaries unless you are
    root and pass --all-users.
    """
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )


# -- demo ---------------------------------------------------------------------
@cli.command()
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="Footprint preset.",
)
@click.option("--fast", is_flag=True, help="Skip driver.quit() (graceful=False).")
@click.option("--headed", is_flag=True, help="Show the browser window.")
@click.option(
    "--cleanup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Teardown budget.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress goes to stderr).")
def demo(preset: str, fast: bool, headed: bool, cleanup_timeout: float, as_json: bool) -> None:
    """Run a demo bot job on a built-in local page and print its cleanup report.

    Serves the built-in page on 127.0.0.1, opens it in a session, reads the title, fills
    a form, clicks, reads the result, then prints the cleanup report.
    Exit status: 0 clean, 1 leftovers, 2 usage or start-up error.
    """
    from ._demo import bot_job, serve_page
    from ._session import ChromeUltraAggressiveCleanup

    session = ChromeUltraAggressiveCleanup(
        headless=not headed, preset=preset, graceful=not fast, cleanup_timeout=cleanup_timeout
    )
    err = as_json  # with --json, stdout carries the JSON alone
    with serve_page() as url:
        click.echo(f"demo: serving the built-in page at {url}", err=err)
        with session as driver:
            click.echo(
                f"demo: session {session.session_id} started {len(session.pids)} process(es) "
                f"in {session.root}",
                err=err,
            )
            outcome = bot_job(driver, url)
            click.echo(f"demo: page title: {outcome['title']!r}", err=err)
            click.echo(f"demo: form result: {outcome['result']!r}", err=err)
    report = session.report
    assert report is not None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo()
        click.echo(render_report(report))
    sys.exit(EXIT_OK if report.ok else EXIT_LEAKS)


# -- diagnose -----------------------------------------------------------------
def _check_all_users(all_users: bool) -> None:
    if all_users and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise click.UsageError("--all-users needs root: other users' processes are not yours to inspect")


def _tree_lines(inv: Any) -> list[str]:
    procs = {p.pid: p for p in inv.processes if p.cls != "zombie"}
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    lines: list[str] = []

    def walk(pid: int, depth: int) -> None:
        p = procs[pid]
        lines.append(
            f"{'  ' * depth}{p.pid} {p.name} [{p.cls}{' ' + p.session_id if p.session_id else ''}]"
            f" rss={_mib(p.rss)} MiB"
        )
        for c in sorted(kids.get(pid, ())):
            walk(c, depth + 1)

    for pid in sorted(procs):
        if procs[pid].ppid not in procs:
            walk(pid, 0)
    return lines


def write_prometheus(inv: Any, path: str) -> None:
    """Write a node_exporter textfile (atomically, as the collector expects)."""
    t = inv.totals()
    lines = [
        "# HELP embassy_cleanup_processes Chrome-family processes by class.",
        "# TYPE embassy_cleanup_processes gauge",
    ]
    for cls in ("session", "orphan", "foreign", "zombie"):
        lines.append(f'embassy_cleanup_processes{{class="{cls}"}} {t[cls]["processes"]}')
    lines += [
        "# HELP embassy_cleanup_memory_bytes Memory of Chrome-family processes by class and kind.",
        "# TYPE embassy_cleanup_memory_bytes gauge",
    ]
    for cls in ("session", "orphan", "foreign"):
        for kind in ("rss", "uss", "pss"):
            value = t[cls][f"{kind}_bytes"]
            if value is not None:
                lines.append(f'embassy_cleanup_memory_bytes{{class="{cls}",kind="{kind}"}} {value}')
    lines += [
        "# HELP embassy_cleanup_sessions Sessions of this library by owner state.",
        "# TYPE embassy_cleanup_sessions gauge",
        f'embassy_cleanup_sessions{{state="live"}} {t["sessions"]["live"]}',
        f'embassy_cleanup_sessions{{state="orphaned"}} {t["sessions"]["orphaned"]}',
        "# HELP embassy_cleanup_stale_dirs Stale session and Chromium dirs in the temp dir.",
        "# TYPE embassy_cleanup_stale_dirs gauge",
        f"embassy_cleanup_stale_dirs {t['stale_dirs']['count']}",
        "# HELP embassy_cleanup_stale_dir_bytes Bytes in stale dirs.",
        "# TYPE embassy_cleanup_stale_dir_bytes gauge",
        f"embassy_cleanup_stale_dir_bytes {t['stale_dirs']['size_bytes']}",
        "# HELP embassy_cleanup_healthy 1 when there is nothing to clean.",
        "# TYPE embassy_cleanup_healthy gauge",
        f"embassy_cleanup_healthy {0 if inv.leaks else 1}",
        "# HELP embassy_cleanup_scan_seconds How long the inventory took.",
        "# TYPE embassy_cleanup_scan_seconds gauge",
        f"embassy_cleanup_scan_seconds {inv.took_s:.6f}",
    ]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


#: --grid of diagnose and clean (issue #8): see _grid_node and docs/grid.md.
_grid_option = click.option(
    "--grid",
    "grid_url",
    metavar="URL",
    default=None,
    help="On a Selenium Grid node: classify (diagnose) or kill (clean) the Chrome trees of the Grid "
    "at URL whose chromedriver is gone or whose Grid session no longer exists; live Grid sessions "
    "are never touched.",
)


def _grid_command(url: str, as_json: bool, *, clean: bool, dry_run: bool) -> None:
    """``diagnose --grid`` / ``clean --grid``; exits (0 healthy/clean, 1 orphans/failures, 2 no Grid)."""
    from ._grid_node import GridNodeError, kill_orphans, render, take_grid_inventory

    try:
        inv = take_grid_inventory(url)
    except GridNodeError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    if not clean or dry_run:
        if as_json:
            click.echo(json.dumps(dict(inv.to_dict(), dry_run=dry_run) if clean else inv.to_dict(), indent=2))
        else:
            for line in render(inv):
                click.echo(line)
        sys.exit(EXIT_OK if clean or not inv.orphans else EXIT_LEAKS)
    done, failed = kill_orphans(inv)
    if as_json:
        click.echo(json.dumps({"grid": inv.url, "ok": not failed, "done": done, "failed": failed}, indent=2))
    else:
        for line in done + [f"FAILED: {f}" for f in failed]:
            click.echo(line)
        click.echo("clean" if not failed else f"{len(failed)} orphan tree(s) survived")
    sys.exit(EXIT_OK if not failed else EXIT_LEAKS)


@cli.command()
@_scope_option
@click.option("--all-users", is_flag=True, help="Include other users' processes (root only).")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON (schema in docs/cli.md).")
@click.option(
    "--prometheus",
    "prom_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Also write a node_exporter textfile to PATH.",
)
@click.option("--no-memory", is_flag=True, help="Skip USS/PSS (faster with many processes).")
@_grid_option
def diagnose(
    temp_dir: str | None,
    all_users: bool,
    as_json: bool,
    prom_path: str | None,
    no_memory: bool,
    grid_url: str | None,
) -> None:
    """Show Chrome-family processes and dirs, classified.

    Classes: session (ours, owner alive), orphan (ours, owner dead), foreign
    (not started by this library), zombie; plus stale dirs.
    Exit status: 0 healthy, 1 leaks found (orphans, zombies of ours, stale
    dirs), 2 usage error.
    """
    from ._inventory import take_inventory

    if grid_url is not None:
        _grid_command(grid_url, as_json, clean=False, dry_run=False)
    _check_all_users(all_users)
    inv = take_inventory(temp_dir, all_users=all_users, memory=not no_memory, scoped=temp_dir is not None)
    if prom_path:
        write_prometheus(inv, prom_path)
    if as_json:
        click.echo(json.dumps(inv.to_dict(), indent=2))
    else:
        t = inv.totals()
        _table(
            f"Chrome-family processes ({'all users' if all_users else 'this user'}; "
            f"scan took {inv.took_s * 1000:.0f} ms)",
            ["class", "processes", "RSS MiB", "USS MiB", "PSS MiB"],
            [
                [
                    c,
                    t[c]["processes"],
                    _mib(t[c]["rss_bytes"]),
                    _mib(t[c]["uss_bytes"]),
                    _mib(t[c]["pss_bytes"]),
                ]
                for c in ("session", "orphan", "foreign", "zombie")
            ],
        )
        _table(
            "Sessions of this library",
            ["session", "owner", "state", "processes", "dir"],
            [
                [
                    s.session_id,
                    s.owner_pid or "-",
                    "live" if s.owner_alive else "ORPHANED",
                    len(s.pids),
                    s.root or "-",
                ]
                for s in inv.sessions
            ],
        )
        _table(
            "Zombies",
            ["pid", "parent", "name", "ours"],
            [[p.pid, p.ppid, p.name, "yes" if p.session_id else "no"] for p in inv.by_class("zombie")],
        )
        _table(
            f"Stale dirs in {inv.temp_dir}",
            ["kind", "age s", "KiB", "path"],
            [[d.kind, f"{d.age_s:.0f}", d.size_bytes // 1024, d.path] for d in inv.stale_dirs],
        )
        tree = _tree_lines(inv)
        if tree:
            click.echo("Process trees")
            for line in tree:
                click.echo("  " + line)
        click.echo(
            "healthy"
            if not inv.leaks
            else "LEAKS FOUND: run 'embassy-cleanup clean --dry-run' to see the fix"
        )
    sys.exit(EXIT_LEAKS if inv.leaks else EXIT_OK)


# -- clean --------------------------------------------------------------------
@cli.command()
@_scope_option
@click.option("--dry-run", is_flag=True, help="Show exactly what would be done; do nothing.")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Only what is at least this old.",
)
@click.option(
    "--all",
    "all_processes",
    is_flag=True,
    help="Also kill EVERY Chrome-family process of the current user, ours or not (asks first).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (with --all).")
@click.option("--all-users", is_flag=True, help="With --all: other users' processes too (root only).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and outcome as JSON.")
@_grid_option
def clean(
    temp_dir: str | None,
    dry_run: bool,
    older_than: float,
    all_processes: bool,
    yes: bool,
    all_users: bool,
    as_json: bool,
    grid_url: str | None,
) -> None:
    """Tear down orphaned sessions and remove stale dirs nothing uses.

    By default only what is provably this library's and abandoned: sessions
    whose owner is dead, and Chromium's own unused dirs in the temp dir.
    A live owner's session and foreign processes are never touched unless
    you pass --all. Exit status: 0 everything went, 1 something is left.
    """
    from ._clean import execute, plan_clean
    from ._inventory import take_inventory

    if grid_url is not None:
        if all_processes or all_users:
            raise click.UsageError("--grid cleans only the Grid's orphans; it does not combine with --all")
        _grid_command(grid_url, as_json, clean=True, dry_run=dry_run)
    _check_all_users(all_users)
    if all_users and not all_processes:
        raise click.UsageError("--all-users only makes sense with --all")
    inv = take_inventory(temp_dir, all_users=all_users, memory=False, scoped=temp_dir is not None)
    plan = plan_clean(inv, older_than=older_than, all_processes=all_processes)
    if all_processes and not dry_run and any(a.kind == "kill-process" for a in plan):
        n = sum(1 for a in plan if a.kind == "kill-process")
        click.secho(
            f"WARNING: --all kills {n} Chrome-family process(es) that may not be ours"
            f"{' (ALL USERS)' if all_users else ''}.",
            fg="red",
            bold=True,
            err=True,
        )
        if not yes:
            if not sys.stdin.isatty():
                raise click.UsageError("--all needs --yes when there is no terminal to confirm on")
            if not click.confirm("Kill them?", default=False, err=True):
                click.echo("nothing done", err=True)
                sys.exit(EXIT_LEAKS)
    if dry_run:
        if as_json:
            click.echo(json.dumps({"dry_run": True, "plan": [a.to_dict() for a in plan]}, indent=2))
        else:
            _table(
                "Would do (dry run)",
                ["action", "target", "detail"],
                [[a.kind, a.target, a.detail] for a in plan],
            )
        sys.exit(EXIT_OK)
    result = execute(plan)
    if as_json:
        click.echo(json.dumps(dict(result.to_dict(), dry_run=False), indent=2))
    else:
        rows = [[a.kind, a.target, o] for a, o in result.done + result.failed]
        _table("Done", ["action", "target", "outcome"], rows)
        click.echo("clean" if result.ok else f"{len(result.failed)} action(s) failed")
    sys.exit(EXIT_OK if result.ok else EXIT_LEAKS)


# -- stress -------------------------------------------------------------------
@cli.command()
@click.option("-n", "--iterations", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "-s",
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="Scenario to run (repeatable; default: all). One of: normal, exception, sigkill-owner, "
    "sigterm-owner, kill-driver, kill-browser, freeze-browser, concurrent.",
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="minimal", show_default=True)
@click.option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Where the run's own dir goes (default: the system temp dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Draw process count and memory over the iterations (needs the 'plot' extra).",
)
def stress(
    iterations: int,
    scenarios: tuple[str, ...],
    preset: str,
    temp_dir: str | None,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Repeat fault scenarios and report any leak. Exit status 1 on any leak."""
    from . import _stress

    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib: pip install 'embassy_cleanup[plot]'") from None
    base = os.path.abspath(temp_dir or tempfile.gettempdir())
    longest = _launcher.max_temp_root_length()
    if longest is not None and len(base) + _stress.RUN_DIR_LENGTH > longest:
        raise click.BadParameter(
            f"{base!r} is too long: the run's sessions would live in a {len(base) + _stress.RUN_DIR_LENGTH}-"
            f"character dir, and Chrome's socket path limit allows {longest}; use a directory of at most "
            f"{longest - _stress.RUN_DIR_LENGTH} characters",
            param_hint="--temp-dir",
        )
    chosen = list(scenarios) or list(_stress.SCENARIOS)
    bad = [s for s in chosen if s not in _stress.SCENARIOS]
    if bad:
        raise click.BadParameter(
            f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(_stress.SCENARIOS)}",
            param_hint="--scenario",
        )
    if _is_tty() and not as_json:
        from rich.progress import Progress

        with Progress() as progress:
            task = progress.add_task("stress", total=iterations)
            result = _stress.run_stress(
                iterations, chosen, temp_dir, preset, on_iteration=lambda it: progress.advance(task)
            )
    else:

        def line(it: Any) -> None:
            if not as_json:
                click.echo(
                    f"[{it.index}/{iterations}] {it.scenario:<15} {it.teardown_s * 1000:7.0f} ms  "
                    f"{'LEAK' if it.leaked else 'ok'}" + (f"  {it.error}" if it.error else "")
                )

        result = _stress.run_stress(iterations, chosen, temp_dir, preset, on_iteration=line)
    if plot_path:
        _stress.plot(result, plot_path)
    s = result.summary()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _table(
            "Stress summary",
            [
                "iterations",
                "leaked procs",
                "zombies",
                "dirs",
                "errors",
                "owner fd growth",
                "teardown p50",
                "p95",
                "max",
            ],
            [
                [
                    s["iterations"],
                    s["leaked_processes"],
                    s["zombies"],
                    s["leaked_dirs"],
                    s["errors"],
                    s["owner_fd_growth"],
                    f"{s['teardown_p50_s'] * 1000:.0f} ms",
                    f"{s['teardown_p95_s'] * 1000:.0f} ms",
                    f"{s['teardown_max_s'] * 1000:.0f} ms",
                ]
            ],
        )
        click.echo("no leaks" if result.ok else "LEAKS FOUND")
    sys.exit(EXIT_OK if result.ok else EXIT_LEAKS)


# -- watch --------------------------------------------------------------------
@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to watch (0: one sample).",
)
@_scope_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def watch(interval: float, duration: float, temp_dir: str | None, as_json: bool) -> None:
    """Sample every --interval for --duration: one line per sample, so a slow
    leak is visible. Exit status 1 if the last sample found leaks."""
    from ._inventory import take_inventory

    end = time.monotonic() + duration
    if not as_json:
        click.echo(
            f"{'time':<8} {'procs':>5} {'sess':>5} {'orph':>5} {'foreign':>7} {'zomb':>5} "
            f"{'stale':>5} {'RSS MiB':>9}"
        )
    while True:
        inv = take_inventory(temp_dir, memory=False, scoped=temp_dir is not None)
        t = inv.totals()
        sample = {
            "time": time.strftime("%H:%M:%S"),
            "processes": sum(t[c]["processes"] for c in ("session", "orphan", "foreign")),
            "session": t["session"]["processes"],
            "orphan": t["orphan"]["processes"],
            "foreign": t["foreign"]["processes"],
            "zombie": t["zombie"]["processes"],
            "stale_dirs": t["stale_dirs"]["count"],
            "rss_bytes": sum(t[c]["rss_bytes"] for c in ("session", "orphan", "foreign")),
        }
        if as_json:
            click.echo(json.dumps(sample))
        else:
            click.echo(
                f"{sample['time']:<8} {sample['processes']:>5} {sample['session']:>5} {sample['orphan']:>5} "
                f"{sample['foreign']:>7} {sample['zombie']:>5} {sample['stale_dirs']:>5} "
                f"{_mib(sample['rss_bytes']):>9}"
            )
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    sys.exit(EXIT_LEAKS if inv.leaks else EXIT_OK)


# -- script -------------------------------------------------------------------
#: The clean-up scripts by kind: the file name at the top of the repository and
#: in ``embassy_cleanup/scripts/`` of an installed wheel (setup.py copies them).
SCRIPTS = {"sh": "cleanup_chrome.sh", "bat": "cleanup_chrome.bat"}


def script_path(kind: str) -> Path:
    """Where the script of ``kind`` (``sh`` or ``bat``) is: in the installed
    package, or at the top of the checkout (an editable install)."""
    name = SCRIPTS[kind]
    here = Path(__file__).resolve().parent
    for path in (here / "scripts" / name, here.parent / name):
        if path.is_file():
            return path
    raise EmbassyCleanupError(
        f"{name} is not installed with this package (looked in {here / 'scripts'} and {here.parent}); "
        "reinstall embassy_cleanup from a wheel or the checkout"
    )


@cli.command()
@click.argument("kind", type=click.Choice(sorted(SCRIPTS)), metavar="KIND")
@click.option("--path", "show_path", is_flag=True, help="Print where the script is instead of its text.")
def script(kind: str, show_path: bool) -> None:
    """Print cleanup_chrome.sh (KIND sh) or cleanup_chrome.bat (KIND bat).

    The scripts hand over to 'embassy-cleanup clean' and have a small
    fallback for machines without the package. The text is written byte for
    byte (the .bat keeps its CRLF line ends), so redirect it to a file:

    \b
        embassy-cleanup script sh > cleanup_chrome.sh
    """
    path = script_path(kind)
    if show_path:
        click.echo(str(path))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(path.read_bytes())
    sys.stdout.buffer.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m embassy_cleanup``."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="embassy-cleanup", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_LEAKS
    except EmbassyCleanupError as err:
        click.echo(f"embassy-cleanup: error: {err}", err=True)
        return EXIT_USAGE
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return EXIT_OK
