"""Engine and socket threads on CPUs of their own: the lists and the configuration
layers (a real worker process placing its threads: tests/system/test_cloud_process.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jetsplit.cloud.config import CloudConfig, load_cloud_config
from jetsplit.cloud.placement import parse_cpus, pinned
from jetsplit.errors import ConfigError

CPUS = sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize(("text", "cpus"), [("", ()), ("1", (1,)), ("0,2-3", (0, 2, 3)), (" 3 , 1-2,", (1, 2, 3))])
def test_parse_cpus(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpus(text, "engine_cpus") == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "-1", "1-", "1.5"])
def test_parse_cpus_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^engine_cpus: expected a CPU list"):
        parse_cpus(text, "engine_cpus")


def test_config_refuses_cpus_this_process_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"io_cpus: CPU\(s\) \[4096\] are not available"):
        CloudConfig(bundles=("demo:split",), io_cpus=(4096,))


def test_cpus_from_file_environment_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'bundles = ["demo:split"]\nengine_cpus = "{CPUS[-1]}"\nio_cpus = "{CPUS[0]}"\n')
    c = load_cloud_config(cfg, {}, {})
    assert (c.engine_cpus, c.io_cpus) == ((CPUS[-1],), (CPUS[0],))
    c = load_cloud_config(cfg, {"JETSPLIT_CLOUD_ENGINE_CPUS": f"{CPUS[0]}"}, {"io_cpus": ()})
    assert (c.engine_cpus, c.io_cpus) == ((CPUS[0],), ())
    with pytest.raises(ConfigError, match="JETSPLIT_CLOUD_IO_CPUS: expected a CPU list"):
        load_cloud_config(cfg, {"JETSPLIT_CLOUD_IO_CPUS": "x"}, {})
    cfg.write_text('bundles = ["demo:split"]\nengine_cpus = 1\n')
    with pytest.raises(ConfigError, match="engine_cpus"):
        load_cloud_config(cfg, {}, {})


def test_pinned_restores_the_thread() -> None:
    before = os.sched_getaffinity(0)
    with pinned((CPUS[0],)):
        assert os.sched_getaffinity(0) == {CPUS[0]}
    assert os.sched_getaffinity(0) == before
