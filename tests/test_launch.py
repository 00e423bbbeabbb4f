"""training/launch.py: what `redwhale.py train --nproc N` hands torchrun, checked on the config
torchrun's agent would get (run.config_from_args), without starting a process."""
import argparse
import dataclasses

import pytest
from torch.distributed import run
from torch.distributed.launcher.api import LaunchConfig

from training import launch

HAS_SHUTDOWN_TIMEOUT = "shutdown_timeout" in {f.name for f in dataclasses.fields(LaunchConfig)}


@pytest.fixture
def launched(monkeypatch):
    """Calls launch.torchrun; returns the args torchrun's run() got (run() itself is replaced)."""
    for var in ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")       # config_from_args may set it
    got = []
    monkeypatch.setattr(run, "run", got.append)

    def call():
        launch.torchrun(["--out", "x"], 2)
        assert len(got) == 1
        return got[0]
    return call


@pytest.mark.skipif(not HAS_SHUTDOWN_TIMEOUT, reason="this torchrun has no --shutdown-timeout")
def test_workers_get_time_to_checkpoint_after_sigterm(launched):
    config, _, cmd_args = run.config_from_args(launched())
    assert config.shutdown_timeout == launch.SHUTDOWN_TIMEOUT == 900   # torchrun's own default: 30
    assert cmd_args[-2:] == ["--out", "x"]


@pytest.mark.skipif(not HAS_SHUTDOWN_TIMEOUT, reason="this torchrun has no --shutdown-timeout")
@pytest.mark.parametrize("var", ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT"])
def test_a_timeout_set_in_the_environment_wins(launched, monkeypatch, var):
    monkeypatch.setenv(var, "120")
    config, _, _ = run.config_from_args(launched())
    assert config.shutdown_timeout == 120


def test_a_torchrun_without_the_option_still_launches(launched, monkeypatch):
    """An older torch's parse_args has no shutdown_timeout: nothing is added, nothing fails."""
    parse = run.parse_args

    def old_parse_args(argv):
        return argparse.Namespace(**{k: v for k, v in vars(parse(argv)).items() if k != "shutdown_timeout"})
    monkeypatch.setattr(run, "parse_args", old_parse_args)
    assert not hasattr(launched(), "shutdown_timeout")
