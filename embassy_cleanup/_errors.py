"""The exception tree of embassy_cleanup.

Every error carries its details as attributes (``pid``, ``path``, ``option``,
``stage`` ...) as well as in its text, and every error pickles, so that it can
cross a process boundary (the watchdog) intact.  The text says what happened,
the value, where it came from and what to do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from selenium.common.exceptions import WebDriverException

if TYPE_CHECKING:  # pragma: no cover
    from ._report import CleanupReport

__all__ = [
    "EmbassyCleanupError",
    "ConfigError",
    "DriverNotFoundError",
    "LaunchError",
    "GridError",
    "SessionClosedError",
    "CleanupIncomplete",
    "PoolError",
    "PoolClosedError",
    "PoolFullError",
    "PoolTimeoutError",
    "LeaseExpiredError",
]


class EmbassyCleanupError(Exception):
    """Base class of every error raised by embassy_cleanup.

    Every class of this module shows as ``embassy_cleanup.X`` in tracebacks
    and pickles under that public name (psutil does the same)."""

    __module__ = "embassy_cleanup"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            cls.__module__ = "embassy_cleanup"

    def __init__(self, msg: str = "", **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        shown = {k: v for k, v in self.details.items() if v is not None and k != "report"}
        if not shown:
            return self.msg
        extra = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{self.msg} ({extra})"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.msg, self.details))


def _rebuild(cls: type[EmbassyCleanupError], msg: str, details: dict[str, Any]) -> EmbassyCleanupError:
    err = cls.__new__(cls)
    EmbassyCleanupError.__init__(err, msg, **details)
    return err  # type: ignore[no-any-return]


class ConfigError(EmbassyCleanupError, ValueError):
    """An option has a bad value.  ``option`` names it, ``value`` holds it."""

    def __init__(self, msg: str, *, option: str, value: Any = None) -> None:
        super().__init__(msg, option=option, value=value)


class DriverNotFoundError(EmbassyCleanupError, FileNotFoundError):
    """No usable chromedriver.  ``tried`` lists ``(source, outcome)`` pairs."""

    tried: tuple[tuple[str, str], ...]

    def __init__(self, msg: str, *, tried: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(msg, tried=tuple(tried))

    def __str__(self) -> str:
        lines = [self.msg]
        for source, outcome in self.tried:
            lines.append(f"  - {source}: {outcome}")
        return "\n".join(lines)


class LaunchError(EmbassyCleanupError, RuntimeError):
    """Chrome or chromedriver could not be started.

    Whatever had already started was torn down before this was raised;
    ``report`` holds that teardown's report.  ``component`` names what did
    not become ready (``"driver"``, ``"browser"``, ``"shell"``, ``"display"``,
    ``"grid"``), ``output`` holds the last lines chromedriver and the browser
    wrote, and ``hint`` a likely cause and fix when one is known.
    """

    path: str | None
    report: CleanupReport | None
    component: str | None
    output: tuple[str, ...]
    hint: str | None

    def __init__(
        self,
        msg: str,
        *,
        path: str | None = None,
        report: CleanupReport | None = None,
        component: str | None = None,
        output: Sequence[str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(msg, path=path, report=report, component=component, output=tuple(output), hint=hint)

    def __str__(self) -> str:
        shown = {k: v for k, v in self.details.items() if v is not None and k in ("path", "component")}
        lines = [f"{self.msg} ({', '.join(f'{k}={v!r}' for k, v in shown.items())})" if shown else self.msg]
        output = self.details.get("output") or ()
        if output:
            lines.append("  last output of chromedriver and the browser:")
            lines += [f"    | {line}" for line in output]
        if self.details.get("hint"):
            lines.append(f"  hint: {self.details['hint']}")
        return "\n".join(lines)


class GridError(EmbassyCleanupError, OSError):
    """A Selenium Grid did not answer as expected (connection, HTTP status, JSON)."""

    def __init__(self, msg: str, *, url: str | None = None) -> None:
        super().__init__(msg, url=url)


class SessionClosedError(EmbassyCleanupError, WebDriverException):  # type: ignore[misc]
    """A command on a driver whose session was torn down (or is being torn down).

    Also a Selenium ``WebDriverException``, so code that catches those keeps
    working; ``session_id`` names the session, ``closed_at`` (epoch seconds)
    says when its teardown started."""

    def __init__(self, msg: str, *, session_id: str | None = None, closed_at: float | None = None) -> None:
        super().__init__(msg, session_id=session_id, closed_at=closed_at)


class CleanupIncomplete(EmbassyCleanupError, RuntimeError):
    """Verification found leftovers.  ``report`` says which."""

    report: CleanupReport

    def __init__(self, msg: str, *, report: CleanupReport) -> None:
        super().__init__(msg, report=report)


class PoolError(EmbassyCleanupError):
    """Base class of the errors a :class:`ChromePool` raises."""


class PoolClosedError(PoolError, RuntimeError):
    """The pool is closed: no checkout, and a browser that was checked out
    when it closed has been torn down under its holder."""


class PoolFullError(PoolError, RuntimeError):
    """``on_full="reject"`` and every one of the ``max_size`` browsers is busy."""

    def __init__(self, msg: str, *, max_size: int) -> None:
        super().__init__(msg, max_size=max_size)


class PoolTimeoutError(PoolError, TimeoutError):
    """``on_full="wait"``: no browser became free within ``timeout`` seconds."""

    def __init__(self, msg: str, *, max_size: int, seconds: float) -> None:
        super().__init__(msg, max_size=max_size, seconds=seconds)


class LeaseExpiredError(PoolError, RuntimeError):
    """A pooled driver was used outside its ``with pool.session()`` block:
    after it was returned, or after the pool retired its browser."""
