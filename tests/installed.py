"""Where the tests find the source tree, what its Makefile runs, and the wheel `make test`
installed (when it did)."""
import importlib.metadata
import json
import os
import pathlib
import subprocess
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def planned(target):
    """The commands ``make TARGET`` runs in a fresh clone, in order (``make -n -B``)."""
    env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')}
    done = subprocess.run(['make', '-n', '-B', '-C', str(ROOT), target], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


# `make test` and `make quick` set this: they run the suite against the wheel installed in
# their venv, which the two tests marked with it check.
INSTALLED = os.environ.get('ADAM_PLUGIN_TEST_INSTALLED') == '1'


installed_only = pytest.mark.skipif(
    not INSTALLED, reason='ADAM_PLUGIN_TEST_INSTALLED=1 (set by make test) checks the installed wheel')


def installed_wheel():
    """The wheel file pip installed adam_plugin from (its record, direct_url.json)."""
    origin = json.loads(importlib.metadata.distribution('adam_plugin').read_text('direct_url.json'))
    return pathlib.Path(urllib.request.url2pathname(urllib.parse.urlparse(origin['url']).path))
