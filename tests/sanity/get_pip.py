"""ansible-test's pip bootstrap, without its download.

ansible-test puts pip into each virtual environment it makes by running a
get-pip.py that it downloads from its own file server, which the lab
machines cannot reach (they reach the package index only). This does what
that script does with what they have: the interpreter's bundled pip
(ensurepip), then the requested pip and packages from the package index.
tests/sanity/run installs it where ansible-test looks for its cached copy.
"""

import argparse
import ensurepip
import importlib
import os
import runpy
import sys


def main():
    # get-pip.py's own options; everything else goes to `pip install`.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--no-setuptools", action="store_true")
    parser.add_argument("--no-wheel", action="store_true")
    options, pip_args = parser.parse_known_args()
    # ensurepip points PIP_CONFIG_FILE at /dev/null for its own offline
    # install; the install below must read the machine's pip configuration
    # (its index and certificate authorities) again.
    environment = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    os.environ.clear()
    os.environ.update(environment)
    importlib.invalidate_caches()
    packages = ["pip"]
    if not options.no_setuptools:
        packages.append("setuptools")
    if not options.no_wheel:
        packages.append("wheel")
    sys.argv = ["pip", "install", "--upgrade", "--force-reinstall", *pip_args, *packages]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
