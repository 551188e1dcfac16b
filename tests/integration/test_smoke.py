import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def test_session_should_leave_nothing_and_spare_bystanders(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>ok</title>")
        pids = dict(cleanup.pids)
        root = cleanup.root
        ports = cleanup.ports
        assert len(pids) >= 5
        assert driver.title == "ok"
    report = cleanup.report
    assert report.ok, str(report)
    assert [s.stage for s in report.stages] == list(Stage)
    h.assert_gone(pids, [root], ports)


def test_a_session_should_not_need_localhost_to_resolve(session_kwargs, monkeypatch):
    """A bare chroot or a minimal image may have no /etc/hosts: Selenium's
    default "localhost" then fails with "Can not connect to the Service"
    (seen on a debootstrapped Debian).  We talk to chromedriver by address."""
    import socket

    real = socket.getaddrinfo

    def no_localhost(host, *args, **kwargs):
        if host == "localhost":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (simulated)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_localhost)
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>no hosts file</title>")
        assert driver.title == "no hosts file"
    assert cleanup.report.ok, str(cleanup.report)
