"""
Fixtures of the Python package's tests: a private bus directory per test
(short, so that socket paths stay under the 107 bytes a Unix socket
address takes), and the paths of the C programs the cross-language tests
run (LAHJA_TOOL, LAHJA_EXAMPLES, set by CTest; those tests are skipped
without them).
"""
import os
import pathlib
import shutil
import tempfile

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def bus_dir():
    d = tempfile.mkdtemp(prefix="lahja-py-", dir="/tmp")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def lahja_tool():
    tool = os.environ.get("LAHJA_TOOL")
    if not tool:
        pytest.skip("LAHJA_TOOL (the lahja command) is not set")
    return tool


@pytest.fixture
def c_examples():
    d = os.environ.get("LAHJA_EXAMPLES")
    if not d:
        pytest.skip("LAHJA_EXAMPLES (the C examples' directory) is not set")
    return pathlib.Path(d)
