"""What a caller's process pays for importing dbworker's Python entries: no oslo.service (which
would fix the process's backend, eventlet by default) and nothing printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import {module}
print(sorted(m for m in sys.modules if m.split(".")[0] in ("oslo_service", "eventlet")))
"""


@pytest.mark.parametrize("module", ["dbworker.client", "dbworker.api"])
def test_importing_an_entry_imports_no_oslo_service_and_prints_nothing(module):
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert done.stderr == ""


def test_building_a_client_prints_no_eventlet_banner():
    code = (
        "from oslo_config import cfg\n"
        "from dbworker import client\n"
        "client.Client(client.get_transport(cfg.ConfigOpts(), url='kombu+memory:////'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "Eventlet is deprecated" not in done.stderr
