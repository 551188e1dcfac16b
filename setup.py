"""Build hook: the wheel carries the top-level clean-up scripts.

``cleanup_chrome.sh`` and ``cleanup_chrome.bat`` stay at the top of the
repository, where users of a checkout find them.  ``build_py`` copies them
into ``embassy_cleanup/scripts/`` of the build, so a ``pip install`` has them
too: ``embassy-cleanup script sh|bat`` prints them (``MANIFEST.in`` puts them
in the sdist, which the wheel is built from).  Everything else is in setup.cfg.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

#: The scripts, relative to this file; the same names in the package.
SCRIPTS = ("cleanup_chrome.sh", "cleanup_chrome.bat")


class BuildPyWithScripts(build_py):
    """``build_py`` that also copies :data:`SCRIPTS` into the package, byte for byte."""

    def run(self) -> None:
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        target = os.path.join(self.build_lib, "embassy_cleanup", "scripts")
        self.mkpath(target)
        for name in SCRIPTS:
            self.copy_file(os.path.join(here, name), os.path.join(target, name), preserve_mode=True)


setup(cmdclass={"build_py": BuildPyWithScripts})
