"""`jaxgan profile`: timings, FLOP accounting over the critic loop, the trace, bad input."""

import json
import os

import jax
import pytest

from jaxgan import cli, config as config_lib, profile

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
  assert "MFU" in profile.format_table(result)


def test_every_critic_update_is_counted(tmp_path):
  one = profile.profile(config_lib.load_config(TINY), str(tmp_path / "a"), steps=2, warmup=1,
                        trace_steps=0, input="synthetic")
  three = profile.profile(config_lib.load_config(TINY, ["--config.loss.n_critic=3"]),
                          str(tmp_path / "b"), steps=2, warmup=1, trace_steps=0,
                          input="synthetic")
  assert three["n_critic_mean"] == 3.0 and three["critic_gflop"] > 0
  # Two more D updates; critic_gflop is one device's share (the step runs on all of them).
  assert three["gflop_per_step"] == pytest.approx(
      one["gflop_per_step"] + 2 * three["critic_gflop"] * jax.device_count(), rel=0.25)
  assert three["examples_per_s"] > 0


def test_unknown_input_is_refused(tmp_path):
  with pytest.raises(ValueError, match="input='disk'; allowed: pipeline, synthetic"):
    profile.profile(config_lib.load_config(TINY), str(tmp_path), steps=1, input="disk")
