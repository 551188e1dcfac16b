"""An owner process with one remote (Grid) session, for the owner-death tests.

Run as ``python _remote_owner.py GRID_URL CHROME_BINARY``: it starts a
session on the Grid, opens a page, prints one JSON line (its pid, our session
id, the remote session id, its watchdog's pid), then waits on stdin until it
is killed or stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys

from embassy_cleanup import ChromeUltraAggressiveCleanup
from embassy_cleanup._watchdog import watchdog_pid


def main(argv: list[str]) -> int:
    url, binary, *node_args = argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    cleanup = ChromeUltraAggressiveCleanup(remote_url=url, binary=binary, extra_args=node_args)
    driver = cleanup.start()
    driver.get("data:text/html,<title>owner</title>")
    print(
        json.dumps(
            {
                "sid": cleanup.session_id,
                "remote_sid": driver.session_id,
                "browser_pid": driver.capabilities.get("goog:processID"),
                "watchdog_pid": watchdog_pid(),
                "title": driver.title,
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    cleanup.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
