"""The watchdog reads every registration its owner wrote before it died, even
when its pipe reader is starved (a loaded machine) and no EOF comes (a forked
child still holds the pipe): seen once in the fault matrix, where a replaced
watchdog reaped nothing after the owner's SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

from embassy_cleanup import _watchdog
from embassy_cleanup._watchdog import WATCHDOG_PROTOCOL, Reaper, serve


def dead_process() -> psutil.Process:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = psutil.Process(proc.pid)
    ident.create_time()  # read while it runs or is a zombie: the identity is kept
    proc.wait()
    return ident


def test_a_registration_in_the_pipe_is_reaped_though_the_reader_was_late_and_no_eof_came(monkeypatch):
    owner = dead_process()
    reaped: list[str] = []
    reapers = {
        "unit": Reaper(parse=lambda body: body, reap=lambda sid, body, exclude: reaped.append(sid) or "ok")
    }
    read_pipe = _watchdog._read_pipe

    def starved_reader(fd, chunks):  # the reader thread gets the CPU only after two polls
        time.sleep(2 * _watchdog.OWNER_POLL_S + 0.2)
        read_pipe(fd, chunks)

    monkeypatch.setattr(_watchdog, "_read_pipe", starved_reader)
    rfd, wfd = os.pipe()
    try:
        message = {"v": WATCHDOG_PROTOCOL, "op": "add", "sid": "s1", "kind": "unit", "body": {}}
        os.write(wfd, json.dumps(message).encode() + b"\n")  # written before the owner "died"; wfd stays open

        assert serve(owner.pid, owner.create_time(), reapers, rfd) == 0
    finally:
        os.close(wfd)
        os.close(rfd)

    assert reaped == ["s1"]
