"""The ``embassy-cleanup`` command: demo, diagnose, clean, stress, watch, script.

Tables and trees use rich on a terminal and plain aligned text otherwise, so
the output pipes and greps cleanly.  Exit status: 0 healthy / done, 1 leaks
found or something could not be cleaned, 2 usage or start-up error, 130
interrupted (Ctrl-C).

Options that make sense as a standing default read an environment variable
(:data:`ENV_VARS`); an error in a value names where it came from, the flag or
the variable.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence, cast

import click
from click.core import ParameterSource

from . import __version__, _launcher
from ._errors import EmbassyCleanupError
from ._presets import DEFAULT_PRESET, PRESETS, PresetName
from ._report import CleanupReport

EXIT_OK, EXIT_LEAKS, EXIT_USAGE = 0, 1, 2
#: Ctrl-C (SIGINT): 128 + 2, the shells' convention; 1 would read as "leaks found".
EXIT_INTERRUPTED = 130
#: The first line of ``diagnose`` when nothing of ours is left behind.
HEALTHY = "healthy"
#: The start of the first line of ``diagnose`` when something of ours is left behind.
LEAKS_FOUND = "LEAKS FOUND"
#: ``diagnose`` prints the process trees without ``--tree`` only up to this many
#: processes: on a shared host they would push everything else off the screen.
TREE_AUTO_MAX = 20

#: The environment variables that give options their default, by option.  Only
#: settings that are safe as a standing default: never --all, --yes, --all-users,
#: --dry-run, --grid or the output format.
ENV_VARS = {
    "verbose": "EMBASSY_CLEANUP_VERBOSE",
    "quiet": "EMBASSY_CLEANUP_QUIET",
    "temp_dir": "EMBASSY_CLEANUP_TEMP_DIR",
    "older_than": "EMBASSY_CLEANUP_OLDER_THAN",
    "strict": "EMBASSY_CLEANUP_STRICT",
    "tree": "EMBASSY_CLEANUP_TREE",
    "prom_path": "EMBASSY_CLEANUP_PROMETHEUS",
    "no_memory": "EMBASSY_CLEANUP_NO_MEMORY",
    "preset": "EMBASSY_CLEANUP_PRESET",
    "cleanup_timeout": "EMBASSY_CLEANUP_CLEANUP_TIMEOUT",
    "interval": "EMBASSY_CLEANUP_INTERVAL",
    "duration": "EMBASSY_CLEANUP_DURATION",
}


class EnvOption(click.Option):
    """An option whose default may come from its environment variable
    (:data:`ENV_VARS`, shown in ``--help``), and whose errors name where the
    bad value came from: the variable when it was read, else the flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.name in ENV_VARS:
            self.envvar = ENV_VARS[self.name]
            self.show_envvar = True

    def get_error_hint(self, ctx: click.Context | None) -> str:
        flags = " / ".join(f"'{opt}'" for opt in self.opts)
        source = ctx.get_parameter_source(self.name) if ctx is not None and self.name else None
        if source is ParameterSource.ENVIRONMENT:
            return f"{self.envvar} (environment variable for {flags})"
        return flags


def option(*decls: str, **kwargs: Any) -> Any:
    """``click.option`` with :class:`EnvOption`: every option of this CLI."""
    return click.option(*decls, cls=EnvOption, **kwargs)


def system_temp_dir_source() -> str:
    """Where ``tempfile.gettempdir()`` got its answer, for a message: the
    first of $TMPDIR, $TEMP, $TMP that it used, or its built-in list."""
    base = os.path.abspath(tempfile.gettempdir())
    for var in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(var)
        if value and os.path.abspath(value) == base:
            return f"${var} (the system temp dir, the default of '--temp-dir')"
    return "the system temp dir (the default of '--temp-dir')"


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
    killed = [a for a in report.killed if a.outcome.signalled]
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
_scope_option = option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Only sessions whose dir is in this dir, and Chromium's litter in it (default: every "
    "session of yours, and litter in the system temp dir).",
)


# -- verbosity: -v/-q before or after the command ------------------------------
_LOG_HANDLER = "embassy-cleanup-cli"
_VERBOSITY = "embassy_cleanup.verbosity"


def configure_logging(verbosity: int) -> None:
    """Logging for a verbosity (``-v`` counts up, ``-q`` down): 1 INFO,
    2 or more DEBUG, -1 or less only ERROR, 0 Python's default (WARNING).

    The root logger gets one handler of ours on stderr (replaced, not added to,
    when the verbosity changes), so ``-vv`` shows Selenium's and urllib3's
    DEBUG logs too."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _LOG_HANDLER]:
        root.removeHandler(handler)
    if verbosity == 0:
        root.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler()
    handler.set_name(_LOG_HANDLER)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO if verbosity == 1 else logging.ERROR)


def _count_verbosity(step: int) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: int) -> None:
        if not value or ctx.resilient_parsing:
            return
        total = ctx.meta.get(_VERBOSITY, 0) + step * value  # meta is shared by the group and its command
        ctx.meta[_VERBOSITY] = total
        configure_logging(total)

    return callback


def verbosity_options(read_env: bool) -> Any:
    """``-v``/``-q``: on the group (``read_env``: their environment variables
    are read there, once) and on every command; the counts add up."""
    cls = EnvOption if read_env else click.Option
    kw: dict[str, Any] = {"count": True, "expose_value": False, "cls": cls}

    def decorate(f: Any) -> Any:
        f = click.option("-q", "--quiet", callback=_count_verbosity(-1), help="Log errors only.", **kw)(f)
        return click.option(
            "-v", "--verbose", callback=_count_verbosity(1), help="Log progress (-v: INFO, -vv: DEBUG).", **kw
        )(f)

    return decorate


class CliGroup(click.Group):
    """The group: Ctrl-C in any command exits 130 (after the command's own
    clean-up, which runs as the KeyboardInterrupt unwinds it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("embassy-cleanup: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


# -- the group --------------------------------------------------------------
@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="embassy-cleanup", message="%(prog)s %(version)s")
@verbosity_options(read_env=True)
def cli() -> None:
    """Chrome under Selenium that leaves nothing behind.

    Every command is scoped to this library's own sessions unless you ask
    for more (clean --all), and never crosses user boundaries unless you are
    root and pass --all-users.

    -v and -q work before and after the command. Exit status 130 on Ctrl-C.
    Shell completion for bash (zsh_source, fish_source for zsh and fish;
    see docs/cli.md):

    \b
        eval "$(_EMBASSY_CLEANUP_COMPLETE=bash_source embassy-cleanup)"
    """


# -- demo ---------------------------------------------------------------------
@cli.command()
@verbosity_options(read_env=False)
@option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="Footprint preset.",
)
@option("--fast", is_flag=True, help="Skip driver.quit() (graceful=False).")
@option("--headed", is_flag=True, help="Show the browser window.")
@option(
    "--cleanup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Teardown budget.",
)
@option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress goes to stderr).")
def demo(preset: str, fast: bool, headed: bool, cleanup_timeout: float, as_json: bool) -> None:
    """Run a demo bot job on a built-in local page and print its cleanup report.

    Serves the built-in page on 127.0.0.1, opens it in a session, reads the title, fills
    a form, clicks, reads the result, then prints the cleanup report.
    Exit status: 0 clean, 1 leftovers, 2 usage or start-up error.
    """
    from ._demo import bot_job, serve_page
    from ._session import ChromeUltraAggressiveCleanup

    session = ChromeUltraAggressiveCleanup(
        headless=not headed,
        preset=cast(PresetName, preset),
        graceful=not fast,
        cleanup_timeout=cleanup_timeout,
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


def write_prometheus(inv: Any, path: str, strict: bool = False) -> None:
    """Write a node_exporter textfile (atomically, as the collector expects).

    ``embassy_cleanup_healthy`` follows ``strict``: without it, Chromium's
    litter (``embassy_cleanup_litter_dirs``) does not make it 0."""
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
        "# HELP embassy_cleanup_stale_dirs Session dirs of this library whose owner is dead.",
        "# TYPE embassy_cleanup_stale_dirs gauge",
        f"embassy_cleanup_stale_dirs {t['stale_dirs']['count']}",
        "# HELP embassy_cleanup_stale_dir_bytes Bytes in stale session dirs.",
        "# TYPE embassy_cleanup_stale_dir_bytes gauge",
        f"embassy_cleanup_stale_dir_bytes {t['stale_dirs']['size_bytes']}",
        "# HELP embassy_cleanup_litter_dirs Unused Chromium dirs in the temp dir (no session of ours).",
        "# TYPE embassy_cleanup_litter_dirs gauge",
        f"embassy_cleanup_litter_dirs {t['litter']['count']}",
        "# HELP embassy_cleanup_litter_dir_bytes Bytes in Chromium litter dirs.",
        "# TYPE embassy_cleanup_litter_dir_bytes gauge",
        f"embassy_cleanup_litter_dir_bytes {t['litter']['size_bytes']}",
        "# HELP embassy_cleanup_healthy 1 when no session of ours left anything (--strict: and no litter).",
        "# TYPE embassy_cleanup_healthy gauge",
        f"embassy_cleanup_healthy {1 if inv.healthy(strict) else 0}",
        "# HELP embassy_cleanup_scan_seconds How long the inventory took.",
        "# TYPE embassy_cleanup_scan_seconds gauge",
        f"embassy_cleanup_scan_seconds {inv.took_s:.6f}",
    ]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


#: --grid of diagnose and clean (issue #8): see _grid_node and docs/grid.md.
_grid_option = option(
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


#: --strict of diagnose and watch (issue 16: health means our health).
_strict_option = option(
    "--strict",
    is_flag=True,
    help="Count Chromium's litter (dirs no session of ours owns) as a leak too.",
)


def _clean_hint(ctx: click.Context, temp_dir: str | None) -> str:
    """The clean command that fixes what this command found, with the user's --temp-dir."""
    cmd = "embassy-cleanup clean --dry-run"
    if temp_dir is not None and ctx.get_parameter_source("temp_dir") is not ParameterSource.DEFAULT:
        cmd += f" --temp-dir {shlex.quote(temp_dir)}"
    return cmd


def verdict_lines(inv: Any, strict: bool, hint: str) -> list[str]:
    """The summary ``diagnose`` prints first: healthy or what leaked, then the litter."""
    lines = []
    if inv.healthy(strict):
        lines.append(HEALTHY)
    else:
        counts = [
            (sum(1 for s in inv.sessions if not s.owner_alive), "orphaned session(s)"),
            (len(inv.by_class("orphan")), "orphan process(es)"),
            (len(inv.zombies_of_ours), "zombie(s) of ours"),
            (len(inv.stale_dirs), "stale session dir(s)"),
            (len(inv.litter) if strict else 0, "litter dir(s) (--strict)"),
        ]
        found = ", ".join(f"{n} {what}" for n, what in counts if n)
        lines.append(f"{LEAKS_FOUND}: {found}; run '{hint}' to see the fix")
    if inv.litter:
        lines.append(
            f"litter: {len(inv.litter)} Chromium dir(s) that no session of ours owns, "
            + ("counted as a leak (--strict)" if strict else "not a leak (--strict counts them)")
        )
    return lines


@cli.command()
@verbosity_options(read_env=False)
@_scope_option
@option("--all-users", is_flag=True, help="Include other users' processes (root only).")
@option("--json", "as_json", is_flag=True, help="Print the inventory as JSON (schema in docs/cli.md).")
@option(
    "--prometheus",
    "prom_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Also write a node_exporter textfile to PATH.",
)
@option("--no-memory", is_flag=True, help="Skip USS/PSS (faster with many processes).")
@_strict_option
@option(
    "--tree/--no-tree",
    default=None,
    help=f"Print the process trees (default: only when there are at most {TREE_AUTO_MAX} processes).",
)
@_grid_option
@click.pass_context
def diagnose(
    ctx: click.Context,
    temp_dir: str | None,
    all_users: bool,
    as_json: bool,
    prom_path: str | None,
    no_memory: bool,
    strict: bool,
    tree: bool | None,
    grid_url: str | None,
) -> None:
    """Show Chrome-family processes and dirs, classified; the summary first.

    Classes: session (ours, owner alive), orphan (ours, owner dead), foreign
    (not started by this library), zombie; plus stale session dirs, and
    Chromium's litter (dirs no session of ours owns; a leak only with
    --strict). Exit status: 0 healthy, 1 leaks found (orphans, zombies of
    ours, stale session dirs; with --strict also litter), 2 usage error.
    """
    from ._inventory import take_inventory

    if grid_url is not None:
        _grid_command(grid_url, as_json, clean=False, dry_run=False)
    _check_all_users(all_users)
    inv = take_inventory(temp_dir, all_users=all_users, memory=not no_memory, scoped=temp_dir is not None)
    if prom_path:
        write_prometheus(inv, prom_path, strict)
    if as_json:
        click.echo(json.dumps(inv.to_dict(strict), indent=2))
    else:
        for line in verdict_lines(inv, strict, _clean_hint(ctx, temp_dir)):
            click.echo(line)
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
            ["session", "owner", "state", "processes", "contexts", "dir"],
            [
                [
                    s.session_id,
                    s.owner_pid or "-",
                    "live" if s.owner_alive else "ORPHANED",
                    len(s.pids),
                    "-" if s.contexts is None else f"{len(s.contexts)} open",
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
            "Stale session dirs (owner dead)",
            ["age s", "KiB", "path"],
            [[f"{d.age_s:.0f}", d.size_bytes // 1024, d.path] for d in inv.stale_dirs],
        )
        _table(
            f"Chromium litter in {inv.temp_dir} (no session of ours owns it"
            f"{'; a leak with --strict' if strict else '; not a leak'})",
            ["age s", "KiB", "path"],
            [[f"{d.age_s:.0f}", d.size_bytes // 1024, d.path] for d in inv.litter],
        )
        lines = _tree_lines(inv)
        running = sum(1 for p in inv.processes if p.cls != "zombie")
        if tree or (tree is None and running <= TREE_AUTO_MAX):
            click.echo("Process trees")
            for line in lines or ["(none)"]:
                click.echo("  " + line)
        else:
            why = "--no-tree" if tree is False else f"more than {TREE_AUTO_MAX}"
            click.echo(f"Process trees: {running} processes, not shown ({why}; --tree shows them)")
    sys.exit(EXIT_OK if inv.healthy(strict) else EXIT_LEAKS)


# -- clean --------------------------------------------------------------------
def ask_yes_no(question: str) -> bool:
    """Ask on stderr, read a line from stdin: only y/yes is yes; end of input is no.

    Not ``click.confirm``: that turns Ctrl-C into an ``Abort`` that looks like
    end of input; here it stays a KeyboardInterrupt, which exits 130."""
    click.echo(f"{question} [y/N]: ", nl=False, err=True)
    answer = sys.stdin.readline()
    if not answer:
        click.echo(err=True)
    return answer.strip().lower() in ("y", "yes")


@cli.command()
@verbosity_options(read_env=False)
@_scope_option
@option("--dry-run", is_flag=True, help="Show exactly what would be done; do nothing.")
@option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Only what is at least this old.",
)
@option(
    "--all",
    "all_processes",
    is_flag=True,
    help="Also kill EVERY Chrome-family process of the current user, ours or not (asks first).",
)
@option("--yes", is_flag=True, help="Do not ask for confirmation (with --all).")
@option("--all-users", is_flag=True, help="With --all: other users' processes too (root only).")
@option("--json", "as_json", is_flag=True, help="Print the plan and outcome as JSON.")
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
            if not ask_yes_no("Kill them?"):
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
@verbosity_options(read_env=False)
@option("-n", "--iterations", type=click.IntRange(min=1), default=20, show_default=True)
@option(
    "-s",
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="Scenario to run (repeatable; default: all). One of: normal, exception, sigkill-owner, "
    "sigterm-owner, kill-driver, kill-browser, freeze-browser, concurrent.",
)
@option("--preset", type=click.Choice(sorted(PRESETS)), default="minimal", show_default=True)
@option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Where the run's own dir goes (default: the system temp dir).",
)
@option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Draw process count and memory over the iterations (needs the 'plot' extra).",
)
@click.pass_context
def stress(
    ctx: click.Context,
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
        given = next(p for p in ctx.command.params if p.name == "temp_dir")
        source = given.get_error_hint(ctx) if temp_dir else system_temp_dir_source()
        raise click.BadParameter(
            f"{base!r} is too long: the run's sessions would live in a {len(base) + _stress.RUN_DIR_LENGTH}-"
            f"character dir, and Chrome's socket path limit allows {longest}; use a directory of at most "
            f"{longest - _stress.RUN_DIR_LENGTH} characters"
            + ("" if temp_dir else " (pass --temp-dir, or set a shorter $TMPDIR)"),
            param_hint=source,
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
@verbosity_options(read_env=False)
@option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS")
@option(
    "--duration",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to watch (0: one sample).",
)
@_scope_option
@option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_strict_option
@click.pass_context
def watch(
    ctx: click.Context, interval: float, duration: float, temp_dir: str | None, as_json: bool, strict: bool
) -> None:
    """Sample every --interval for --duration: one line per sample, so a slow
    leak is visible. Exit status 1 if the last sample found leaks (with
    --strict, Chromium's litter counts too)."""
    from ._inventory import take_inventory

    end = time.monotonic() + duration
    if not as_json:
        click.echo(
            f"{'time':<8} {'procs':>5} {'sess':>5} {'orph':>5} {'foreign':>7} {'zomb':>5} "
            f"{'stale':>5} {'litter':>6} {'RSS MiB':>9}"
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
            "litter": t["litter"]["count"],
            "rss_bytes": sum(t[c]["rss_bytes"] for c in ("session", "orphan", "foreign")),
        }
        if as_json:
            click.echo(json.dumps(sample))
        else:
            click.echo(
                f"{sample['time']:<8} {sample['processes']:>5} {sample['session']:>5} {sample['orphan']:>5} "
                f"{sample['foreign']:>7} {sample['zombie']:>5} {sample['stale_dirs']:>5} "
                f"{sample['litter']:>6} {_mib(sample['rss_bytes']):>9}"
            )
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    if not inv.healthy(strict):
        click.echo(f"{LEAKS_FOUND}: run '{_clean_hint(ctx, temp_dir)}' to see the fix", err=True)
    sys.exit(EXIT_OK if inv.healthy(strict) else EXIT_LEAKS)


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


@cli.command(short_help="Print a clean-up script: cleanup_chrome.sh or cleanup_chrome.bat.")
@verbosity_options(read_env=False)
@click.argument("kind", type=click.Choice(sorted(SCRIPTS)), metavar="KIND")
@option("--path", "show_path", is_flag=True, help="Print where the script is instead of its text.")
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
    except click.exceptions.Abort as exc:  # click turns a Ctrl-C outside a command into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("embassy-cleanup: interrupted", err=True)
            return EXIT_INTERRUPTED
        click.echo("aborted", err=True)
        return EXIT_LEAKS
    except KeyboardInterrupt:
        click.echo("embassy-cleanup: interrupted", err=True)
        return EXIT_INTERRUPTED
    except EmbassyCleanupError as err:
        click.echo(f"embassy-cleanup: error: {err}", err=True)
        return EXIT_USAGE
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return EXIT_OK
