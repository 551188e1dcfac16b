"""An owner process for the crash tests, run in a child interpreter.

It starts ``--sessions`` sessions in ``--temp-root`` (from the main thread, or
from a worker thread that has exited before anything is printed), opens a
``data:`` page in each, prints one JSON line describing itself, then serves
one-line commands on stdin, answering each with one JSON line:

``title I``  the title of session I's current page
``get I``    open another ``data:`` page in session I
``close I``  close session I; the answer carries its report
``fork-close I``  fork a child that calls ``close()`` on session I and runs the
             atexit hooks, then exits; the answer is ``{"forked": pid,
             "exit": status, "title": ...}`` (the title read after the child's exit)
``info``     the description again (watchdog pid as it is now)
``exit``     return from ``main()`` (exit status 0); EOF on stdin does the same

The description::

    {"pid": ..., "create_time": ..., "watchdog_pid": ... or null,
     "sessions": [{"index", "sid", "root", "pids": {"<pid>": create_time},
                   "ports", "watchdog_pid"}]}

``watchdog_pid`` per session is what ``embassy_cleanup._watchdog.watchdog_pid()``
said right after that session started.  Logging (INFO) goes to stderr.

``--adopt DIR`` starts a plain ``webdriver.Chrome()`` instead (the sandbox's
flags; chromedriver's ``TMPDIR``/``XDG_CONFIG_HOME``/``XDG_CACHE_HOME`` in
``DIR/tmp``, ``DIR/config``, ``DIR/cache``, so its temp profile lands in
``DIR/tmp``; ``--user-data-dir`` gives it a chosen profile), adopts it
(``watchdog`` per ``--no-watchdog``), then opens a second tab so that a
renderer is born after adopt.  Its session's description carries ``root``
(``DIR``), ``profile``, ``profile_removed``, ``singleton_dir``, ``scratch_dir``,
``driver_pid``, ``browser_pid``, ``pids`` (what adopt recorded) and
``born_after_adopt`` (``{"<pid>": create_time}`` of the browser's
descendants started since adopt: tabs are opened, at most 5, until one is).

``--signal-handlers`` calls ``install_signal_handlers()``; ``--app-handler``
first installs an application SIGTERM handler that prints what it sees
(``{"app_handler": signum, "closed": [...], "ok": [...], "roots_exist": [...]}``)
and exits with status ``APP_HANDLER_EXIT``; ``--ignore-sighup`` first sets
SIGHUP to ``SIG_IGN`` (as ``nohup`` does).
"""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

import psutil
from selenium.webdriver import ChromeOptions

from embassy_cleanup import ChromePool, ChromeUltraAggressiveCleanup, install_signal_handlers
from embassy_cleanup._watchdog import watchdog_pid

APP_HANDLER_EXIT = 7
#: What plain Chrome needs in this sandbox (as in tests/integration/test_adopt.py).
PLAIN_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run")


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def page(text: str) -> str:
    return f"data:text/html,<title>{text}</title><p>{text}</p>"


def wait_title(driver, title: str, timeout: float = 30.0) -> str:
    end = time.monotonic() + timeout
    while True:
        current = driver.title
        if current == title or time.monotonic() >= end:
            return current
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pids(cleanup: ChromeUltraAggressiveCleanup) -> dict[str, float]:
    pids = {}
    for pid in cleanup.pids:
        try:
            pids[str(pid)] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            continue
    return pids


class Owner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cleanups: list[ChromeUltraAggressiveCleanup] = []
        self.drivers: list = []
        self.described: list[dict] = []

    def start_one(self, index: int) -> None:
        args = self.args
        options = ChromeOptions()
        options.page_load_strategy = "none"  # the first load sometimes stalls 5 s; we poll the title
        kwargs = {
            "temp_root": args.temp_root,
            "watchdog": not args.no_watchdog,
            "graceful": not args.no_graceful,
            "cleanup_timeout": 10,
            "options": options,
        }
        if args.preset:
            kwargs["preset"] = args.preset
        cleanup = ChromeUltraAggressiveCleanup(**kwargs)
        driver = cleanup.start()
        self.cleanups.append(cleanup)
        self.drivers.append(driver)
        driver.get(page(f"owner-{index}"))
        wait_title(driver, f"owner-{index}")
        self.described.append(
            {
                "index": index,
                "sid": cleanup.session_id,
                "root": cleanup.root,
                "pids": _pids(cleanup),
                "ports": sorted(cleanup.ports),
                "watchdog_pid": watchdog_pid(),
            }
        )

    def start_adopted(self, index: int) -> None:
        """``--adopt``: a plain driver, as its users start it, adopted."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        from embassy_cleanup import adopt

        args = self.args
        base = args.adopt
        env = dict(os.environ)
        for sub, key in (("tmp", "TMPDIR"), ("config", "XDG_CONFIG_HOME"), ("cache", "XDG_CACHE_HOME")):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
            env[key] = os.path.join(base, sub)
        options = webdriver.ChromeOptions()
        for flag in PLAIN_FLAGS:
            options.add_argument(flag)
        if args.user_data_dir:
            options.add_argument(f"--user-data-dir={args.user_data_dir}")
        options.page_load_strategy = "none"
        service = Service(executable_path=shutil.which("chromedriver"), env=env)
        driver = webdriver.Chrome(options=options, service=service)
        driver.get(page(f"owner-{index}"))
        wait_title(driver, f"owner-{index}")
        session = adopt(driver, watchdog=not args.no_watchdog, graceful=not args.no_graceful)
        adopted_at = time.time()
        recorded = {str(pid): psutil.Process(pid).create_time() for pid in session.pids if _alive(pid)}
        # A renderer born after adopt: the first new tab may take Chrome's
        # spare renderer (started before adopt); the next ones need their own.
        browser = psutil.Process(session.found.browser_pid)
        later: dict[str, float] = {}
        for _ in range(5):
            driver.switch_to.new_window("tab")
            driver.get(page(f"owner-{index}-tab"))
            wait_title(driver, f"owner-{index}-tab")
            for child in browser.children(recursive=True):
                try:
                    born = child.create_time()
                    if str(child.pid) not in recorded and born > adopted_at and _alive(child.pid):
                        later[str(child.pid)] = born
                except psutil.NoSuchProcess:
                    continue
            if later:
                break
        self.cleanups.append(session)
        self.drivers.append(driver)
        found = session.found
        self.described.append(
            {
                "index": index,
                "sid": session.session_id,
                "root": base,
                "profile": found.profile_dir,
                "profile_removed": found.remove_profile,
                "singleton_dir": found.singleton_dir,
                "scratch_dir": found.scratch_dir.path if found.scratch_dir is not None else None,
                "driver_pid": found.driver_pid,
                "browser_pid": found.browser_pid,
                "pids": recorded,
                "born_after_adopt": later,
                "watchdog_pid": watchdog_pid(),
            }
        )

    def start_all(self) -> None:
        if self.args.adopt:
            self.start_adopted(0)
            return
        if self.args.contexts:
            self.start_context_pool()
            return
        if self.args.pool:
            self.start_pool()
            return
        for i in range(self.args.sessions):
            self.start_one(i)

    def start_pool(self) -> None:
        """``--pool``: a ChromePool of ``--sessions`` browsers, the first
        checked out (held), the others returned idle; each is described as a
        session."""
        args = self.args
        options = ChromeOptions()
        options.page_load_strategy = "none"
        self.pool = ChromePool(
            max_size=args.sessions,
            idle_timeout=None,
            temp_root=args.temp_root,
            watchdog=not args.no_watchdog,
            cleanup_timeout=10,
            options=options,
        )
        leases = [self.pool.session() for _ in range(args.sessions)]
        drivers = [lease.__enter__() for lease in leases]
        for i, driver in enumerate(drivers):
            driver.get(page(f"owner-{i}"))
            wait_title(driver, f"owner-{i}")
        for i, driver in enumerate(drivers):
            cleanup = self.pool.session_of(driver)
            assert cleanup is not None, "a checked-out driver the pool does not know"
            self.cleanups.append(cleanup)
            self.drivers.append(driver)
            self.described.append(
                {
                    "index": i,
                    "sid": cleanup.session_id,
                    "root": cleanup.root,
                    "pids": _pids(cleanup),
                    "ports": sorted(cleanup.ports),
                    "watchdog_pid": watchdog_pid(),
                    "in_use": i == 0,
                }
            )
        for lease in leases[1:]:
            lease.__exit__(None, None, None)
        self.leases = leases[:1]

    def start_context_pool(self) -> None:
        """``--contexts``: ``ChromePool(isolation="context")`` with one browser and
        ``--sessions`` jobs checked out (held), each in its own context; the
        browser is described as the session, ``contexts`` its context dirs."""
        args = self.args
        self.pool = ChromePool(
            max_size=1,
            isolation="context",
            contexts_per_browser=args.sessions,
            idle_timeout=None,
            temp_root=args.temp_root,
            watchdog=not args.no_watchdog,
            cleanup_timeout=10,
        )
        self.leases = [self.pool.session() for _ in range(args.sessions)]
        drivers = [lease.__enter__() for lease in self.leases]
        for i, driver in enumerate(drivers):
            driver.get(page(f"owner-{i}"))
            wait_title(driver, f"owner-{i}")
            self.drivers.append(driver)
        cleanup = self.pool.session_of(drivers[0])
        assert cleanup is not None, "a checked-out driver the pool does not know"
        self.cleanups.append(cleanup)
        self.described.append(
            {
                "index": 0,
                "sid": cleanup.session_id,
                "root": cleanup.root,
                "pids": _pids(cleanup),
                "ports": sorted(cleanup.ports),
                "watchdog_pid": watchdog_pid(),
                "contexts": sorted(os.listdir(os.path.join(cleanup.root, "contexts"))),
            }
        )

    def describe(self) -> dict:
        me = psutil.Process()
        return {
            "pid": me.pid,
            "create_time": me.create_time(),
            "watchdog_pid": watchdog_pid(),
            "thread": self.args.thread,
            "sessions": self.described,
        }

    def app_handler(self, signum, frame) -> None:
        emit(
            {
                "app_handler": signum,
                "closed": [c.report is not None for c in self.cleanups],
                "ok": [c.report.ok if c.report is not None else None for c in self.cleanups],
                "roots_exist": [os.path.lexists(d["root"]) for d in self.described],
            }
        )
        sys.exit(APP_HANDLER_EXIT)

    def serve(self) -> int:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            op, rest = words[0], words[1:]
            try:
                if op == "exit":
                    return 0
                if op == "info":
                    emit(self.describe())
                elif op == "title":
                    emit({"title": self.drivers[int(rest[0])].title})
                elif op == "get":
                    i = int(rest[0])
                    self.drivers[i].get(page(rest[1]))
                    emit({"title": wait_title(self.drivers[i], rest[1])})
                elif op == "fork-close":
                    i = int(rest[0])
                    child = os.fork()
                    if child == 0:  # a fork()ed child: must neither tear down nor unregister
                        try:
                            self.cleanups[i].close()
                            atexit._run_exitfuncs()
                        finally:
                            os._exit(0)
                    _, status = os.waitpid(child, 0)
                    emit({"forked": child, "exit": status, "title": self.drivers[i].title})
                elif op == "close":
                    report = self.cleanups[int(rest[0])].close()
                    emit(
                        {
                            "closed": int(rest[0]),
                            "ok": report.ok,
                            "killed": [a.pid for a in report.killed],
                            "report": str(report),
                        }
                    )
                else:
                    emit({"error": f"unknown command {op!r}"})
            except Exception as err:  # report it to the test; keep serving
                emit({"error": f"{type(err).__name__}: {err}"})
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp-root", required=True)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--no-watchdog", action="store_true")
    parser.add_argument("--no-graceful", action="store_true")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--pool", action="store_true", help="the sessions are the browsers of one ChromePool")
    parser.add_argument("--contexts", action="store_true", help="contexts of one pooled browser")
    parser.add_argument("--thread", action="store_true", help="start the sessions in a worker thread")
    parser.add_argument("--signal-handlers", action="store_true")
    parser.add_argument("--app-handler", action="store_true")
    parser.add_argument("--ignore-sighup", action="store_true")
    parser.add_argument("--adopt", default=None, metavar="DIR", help="adopt a plain webdriver.Chrome()")
    parser.add_argument("--user-data-dir", default=None, help="with --adopt: a chosen profile dir")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # a hung owner shows its stacks (conftest)
    # Start from the default dispositions an application gets from a terminal,
    # even when the suite itself runs under nohup (SIGHUP ignored, inherited):
    # the signal tests expect SIGTERM/SIGHUP to end the owner.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")

    owner = Owner(args)
    if args.app_handler:
        signal.signal(signal.SIGTERM, owner.app_handler)
    if args.ignore_sighup:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.signal_handlers:
        install_signal_handlers()

    if args.thread:
        failure: list[BaseException] = []

        def work() -> None:
            try:
                owner.start_all()
            except BaseException as err:  # re-raised in the main thread
                failure.append(err)

        worker = threading.Thread(target=work, name="owner-starter")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        assert not worker.is_alive()
    else:
        owner.start_all()
    emit(owner.describe())
    return owner.serve()


if __name__ == "__main__":
    sys.exit(main())
