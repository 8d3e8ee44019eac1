"""Where the tests find the source tree, and the wheel `make test` installed (when it did)."""
import importlib.metadata
import json
import os
import pathlib
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


# `make test` and `make quick` set this: they run the suite against the wheel installed in
# their venv, which the two tests marked with it check.
INSTALLED = os.environ.get('ADAM_PLUGIN_TEST_INSTALLED') == '1'


installed_only = pytest.mark.skipif(
    not INSTALLED, reason='ADAM_PLUGIN_TEST_INSTALLED=1 (set by make test) checks the installed wheel')


def installed_wheel():
    """The wheel file pip installed adam_plugin from (its record, direct_url.json)."""
    origin = json.loads(importlib.metadata.distribution('adam_plugin').read_text('direct_url.json'))
    return pathlib.Path(urllib.request.url2pathname(urllib.parse.urlparse(origin['url']).path))
