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
    assert "#max_pool_size = 10\n" in sample
    assert "#executor_thread_pool_size = 8\n" in sample  # dbworker's, not oslo.messaging's 64
    assert "#rabbit_qos_prefetch_count = 1\n" in sample


def test_the_systemd_unit_waits_for_a_worker_and_outlasts_the_graceful_drain():
    """The unit's settings match what the daemon does (tests/integration/test_daemon.py): READY=1
    comes from a worker process, SIGHUP reloads, and systemd waits longer than the drain."""
    import configparser

    from oslo_config import cfg
    from oslo_service import _options

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(ETC / "systemd" / "dbworker.service")
    service = unit["Service"]
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "all")
    assert service["ExecStart"].split()[0].endswith("/bin/dbworker")
    assert "--config-file" in service["ExecStart"].split()
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    drain = next(o for o in _options.service_opts if o.name == "graceful_shutdown_timeout")
    assert isinstance(drain, cfg.Opt) and int(service["TimeoutStopSec"]) > drain.default


def test_the_in_process_settings_are_the_options_defaults_and_the_daemon_reads_every_option():
    import dataclasses

    from oslo_config import cfg

    from dbworker import options
    from dbworker.core.settings import DEFAULT_SETTINGS
    from dbworker.daemon import worker

    conf = cfg.ConfigOpts()
    options.register_opts(conf)
    conf([])
    assert worker.settings(conf) == DEFAULT_SETTINGS
    changed = {
        "volume_name_template": "vol-%s",
        "snapshot_name_template": "snap-%s",
        "enable_new_services": False,
        "volume_topic": "other-volume",
        "reservation_expire": 60,
        "until_refresh": 3,
        "max_age": 7,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(DEFAULT_SETTINGS)}
    for name, value in changed.items():
        conf.set_override(name, value, group="dbworker")
    assert dataclasses.asdict(worker.settings(conf)) == changed
