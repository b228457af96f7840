"""``etc/dbworker.conf`` is exactly what ``oslo-config-generator`` writes today, so it never goes
stale. Regenerate it with ``oslo-config-generator --config-file etc/dbworker-config-generator.conf``
(the project must be installed, ``pip install -e .``, for its ``oslo.config.opts`` entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ETC = Path(__file__).resolve().parents[2] / "etc"


def test_the_sample_config_is_what_the_generator_writes(tmp_path):
    output = tmp_path / "dbworker.conf"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(ETC / "dbworker-config-generator.conf"),
            "--output-file",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text() == (ETC / "dbworker.conf").read_text(), (
        "etc/dbworker.conf is stale: run "
        "`oslo-config-generator --config-file etc/dbworker-config-generator.conf`"
    )


def test_the_sample_config_documents_every_group_dbworker_reads():
    sample = (ETC / "dbworker.conf").read_text()
    for group in ("[DEFAULT]", "[dbworker]", "[database]", "[oslo_messaging_rabbit]"):
        assert f"\n{group}\n" in f"\n{sample}"
    assert "#connection = sqlite:///dbworker.sqlite\n" in sample
    assert "#max_pool_size = 18\n" in sample
