"""A fork()ed child inherits the session objects; its exit must not tear down
the parent's browser (finalizers and inherited handlers run in the child)."""

import atexit
import os

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def test_forked_child_exiting_normally_should_leave_the_parents_session_alone(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>parent</title>")
        pids = dict(cleanup.pids)
        # chromedriver and the browser itself (renderers come and go on their own)
        driver_pid = next(p for p, n in pids.items() if n == "chromedriver")
        core = [driver_pid] + [p.pid for p in psutil.Process(driver_pid).children()]
        pid = os.fork()
        if pid == 0:
            # The child does what a normal interpreter exit does (atexit hooks,
            # where weakref.finalize runs unclosed sessions' finalizers), then
            # leaves without unwinding into pytest.
            try:
                atexit._run_exitfuncs()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status)
        assert all(h.pid_running(p) for p in core), "the child's exit killed the parent's processes"
        assert os.path.isdir(cleanup.root)
        assert driver.title == "parent"
    assert cleanup.report.ok, str(cleanup.report)
    h.assert_gone(pids, [cleanup.report.removed[0]])
