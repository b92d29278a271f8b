"""`jaxgan profile`: timings, FLOP accounting over the critic loop, the trace, bad input."""

import json
import logging
import os

import jax
import pytest

from jaxgan import cli, config as config_lib, profiling
from tests.tiny_run import train_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_cli_profile_prints_json_and_leaves_a_trace(tmp_path, capsys):
  workdir = tmp_path / "prof"
  assert cli.main(["profile", "--config", TINY, "--workdir", str(workdir), "--steps", "4",
                   "--warmup", "1", "--trace-steps", "2", "--input", "synthetic",
                   "--json"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["input"] == "synthetic" and result["n_critic"] == 1
  assert 0 < result["step_ms_p50"] <= result["step_ms_p90"] <= result["step_ms_max"]
  assert result["gflop_per_step"] > 0 and 0 < result["mfu"] < 1
  assert result["flop_accounting"].startswith("whole step")
  assert json.loads((workdir / "profile.json").read_text())["step_ms_p50"] == (
      result["step_ms_p50"])
  traces = [f for _, _, files in os.walk(workdir / "profile") for f in files]
  assert any(f.endswith((".xplane.pb", ".trace.json.gz")) for f in traces), traces
  assert "MFU" in profiling.format_table(result)


def test_every_critic_update_is_counted(tmp_path):
  one = profiling.profile(config_lib.load_config(TINY), str(tmp_path / "a"), steps=2, warmup=1,
                        trace_steps=0, input="synthetic")
  three = profiling.profile(config_lib.load_config(TINY, ["--config.loss.n_critic=3"]),
                          str(tmp_path / "b"), steps=2, warmup=1, trace_steps=0,
                          input="synthetic")
  assert three["n_critic_mean"] == 3.0 and three["critic_gflop"] > 0
  # Two more D updates; critic_gflop is one device's share (the step runs on all of them).
  assert three["gflop_per_step"] == pytest.approx(
      one["gflop_per_step"] + 2 * three["critic_gflop"] * jax.device_count(), rel=0.25)
  assert three["examples_per_s"] > 0


def test_unknown_input_is_refused(tmp_path):
  with pytest.raises(ValueError, match="input='disk'; allowed: pipeline, synthetic"):
    profiling.profile(config_lib.load_config(TINY), str(tmp_path), steps=1, input="disk")


def test_steady_step_skips_the_critic_warmup_and_periodic_steps():
  lpd5 = config_lib.load_config(os.path.join(ROOT, "configs", "musegan_lpd5.py"))
  assert profiling.steady_step(lpd5) == 25   # 100 D updates per step before that
  assert profiling.steady_step(config_lib.load_config(TINY)) == 0
  periodic = config_lib.load_config(TINY, ["--config.loss.critic_every_n=5"])
  assert profiling.steady_step(periodic) == 1   # step 0 is a periodic many-critic step


def test_profile_times_the_steady_state_unless_told_otherwise(tmp_path):
  schedule = ["--config.loss.critic_warmup_steps=3", "--config.loss.critic_warmup_n=4"]
  steady = profiling.profile(config_lib.load_config(TINY, schedule), str(tmp_path / "a"),
                           steps=2, warmup=1, trace_steps=0, input="synthetic")
  assert steady["start_step"] == 3 and steady["n_critic_mean"] == 1.0
  early = profiling.profile(config_lib.load_config(TINY, schedule), str(tmp_path / "b"),
                          steps=2, warmup=0, trace_steps=0, input="synthetic", start_step=0)
  assert early["start_step"] == 0 and early["n_critic_mean"] == 4.0
  assert early["gflop_per_step"] > 2 * steady["gflop_per_step"]
  with pytest.raises(ValueError, match="start_step=-1"):
    profiling.profile(config_lib.load_config(TINY), str(tmp_path / "c"), steps=1,
                    input="synthetic", start_step=-1)


class _FakeDevice:
  platform = "fake"

  def __init__(self, kind):
    self.device_kind = kind


@pytest.mark.parametrize("kind,peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA B200", 2250e12), ("NVIDIA A100-SXM4-80GB", 312e12)])
def test_datasheet_peak_by_device_kind(kind, peak):
  assert profiling.device_peak(_FakeDevice(kind)) == (peak, f"datasheet bf16 peak of {kind}")


def test_unknown_kinds_have_no_datasheet_peak():
  # A v4i is not a v4, and a made-up "NVIDIA H1000" is not an H100.
  for kind in ("TPU v4 lite", "TPU7x", "NVIDIA H1000", "cpu", ""):
    assert profiling.known_peak(kind) is None, kind


def test_only_process_0_writes_the_json_and_the_trace(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda *a: 1)
  result = profiling.profile(config_lib.load_config(TINY), str(tmp_path), steps=2, warmup=1,
                           trace_steps=2, input="synthetic")
  assert result["step_ms_p50"] > 0 and result["trace_dir"] is None
  assert not (tmp_path / "profile.json").exists() and not (tmp_path / "profile").exists()


def test_trace_window_of_a_run():
  config = config_lib.load_config(TINY, ["--config.train.profile_steps=3",
                                         "--config.train.num_steps=100"])
  window = profiling.TraceWindow.for_run(config, "/w", start=40)
  assert (window.first, window.steps, window.enabled) == (50, 3, True)
  assert window.directory == os.path.join("/w", "profile")
  # A run too short for the warm-up traces its last steps.
  assert profiling.TraceWindow.for_run(config, "/w", start=96).first == 97
  config.train.profile_start = 20
  assert profiling.TraceWindow.for_run(config, "/w", start=0).first == 20
  assert not profiling.TraceWindow.for_run(config, "/w", start=30).enabled   # resumed past it
  config.train.profile_steps = 0
  assert not profiling.TraceWindow.for_run(config, "/w", start=0).enabled
  with pytest.raises(config_lib.ConfigError, match="train.profile_start=-2 must be a step"):
    config_lib.load_config(TINY, ["--config.train.profile_start=-2"])


def test_train_with_profile_steps_leaves_a_trace(tmp_path):
  workdir = train_tiny(tmp_path / "run", "--config.train.profile_steps=2", steps=5)
  traces = [f for _, _, files in os.walk(workdir / "profile") for f in files]
  assert any(f.endswith((".xplane.pb", ".trace.json.gz")) for f in traces), traces


def test_followers_log_warnings_only(monkeypatch):
  from jaxgan import distributed  # pylint: disable=import-outside-toplevel
  logger = logging.getLogger("jaxgan")
  before = logger.level
  try:
    distributed.quiet_followers()   # process 0: as configured
    assert logger.level == before
    monkeypatch.setattr(jax, "process_index", lambda *a: 1)
    distributed.quiet_followers()
    assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
  finally:
    logger.setLevel(before)
