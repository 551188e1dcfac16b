"""Named footprint presets: the Chrome flags a session starts with, and why.

Every flag is listed with the reason it is there, and ``docs/usage.md``
shows the same table.  ``"headless-shell"`` also changes the browser: it runs
Chromium's old headless shell (Debian package ``chromium-headless-shell``),
about half the memory of ``chromium --headless=new`` (docs/benchmarks.md),
and falls back to ``"minimal"`` with a warning when the shell is not
installed (:data:`SHELL_FALLBACK`).  ``--disable-features`` lists are merged into one flag,
because when a flag appears twice on a command line the last one wins and
would silently drop the earlier list.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

#: Flags every session gets, whatever the preset: they stop Chrome from
#: reaching out to the network or doing first-run work it does not need.
BASE_FLAGS: tuple[tuple[str, str], ...] = (
    ("--no-first-run", "skip the first-run wizard and its profile writes"),
    ("--no-default-browser-check", "no default-browser probe at start"),
    ("--disable-background-networking", "no update, safe-browsing or metrics fetches"),
    ("--disable-component-update", "no component downloads into the profile"),
    ("--disable-sync", "no sync service"),
    ("--disable-default-apps", "no default apps installed into the profile"),
    ("--password-store=basic", "no keyring daemon is contacted"),
)

#: What "balanced" and "minimal" both add.
_LEAN: tuple[tuple[str, str], ...] = (
    ("--disable-extensions", "no extension processes"),
    ("--disable-component-extensions-with-background-pages", "no background pages"),
    ("--mute-audio", "no audio service work"),
    ("--disk-cache-size=1", "a near-empty disk cache: less to write and remove"),
    ("--metrics-recording-only", "no metrics upload"),
    ("--disable-breakpad", "no crash-dump uploads"),
)
_MINIMAL = _LEAN + (
    ("--renderer-process-limit=1", "at most one renderer process"),
    ("--disable-site-isolation-trials", "no process per site"),
    ("--js-flags=--max-old-space-size=256", "cap each V8 heap at 256 MB"),
    (
        "--disable-features=Translate,MediaRouter,OptimizationHints,"
        "IsolateOrigins,site-per-process,BackForwardCache",
        "idle services and per-site processes off",
    ),
)

PRESETS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "stock": (),
    "balanced": _LEAN
    + (("--disable-features=Translate,MediaRouter,OptimizationHints", "idle services off"),),
    "minimal": _MINIMAL,
    # The same flags, on the headless shell binary instead of chromium.
    "headless-shell": _MINIMAL,
}

#: The preset names, as a type: ``preset=`` takes one of these.
PresetName = Literal["balanced", "minimal", "stock", "headless-shell"]
DEFAULT_PRESET: PresetName = "balanced"

#: Presets that run the headless shell instead of the Chrome binary.
SHELL_PRESETS = frozenset({"headless-shell"})
#: What a shell preset becomes when no headless shell is installed.
SHELL_FALLBACK = "minimal"


def merge_flags(*groups: Sequence[str]) -> list[str]:
    """Concatenate flag lists, de-duplicating and merging every
    ``--disable-features=`` / ``--enable-features=`` into one flag each (the
    first position wins, the features are the union)."""
    out: list[str] = []
    features: dict[str, list[str]] = {}
    seen: set[str] = set()
    for group in groups:
        for flag in group:
            key, sep, value = flag.partition("=")
            if sep and key in ("--disable-features", "--enable-features"):
                if key not in features:
                    features[key] = []
                    out.append(key)
                features[key] += [v for v in value.split(",") if v and v not in features[key]]
                continue
            if flag not in seen:
                seen.add(flag)
                out.append(flag)
    return [f"{f}={','.join(features[f])}" if f in features else f for f in out]


def preset_flags(name: str) -> list[str]:
    return [flag for flag, _why in BASE_FLAGS + PRESETS[name]]
