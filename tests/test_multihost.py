"""Many hosts on one CPU, and preemption: real `jaxgan train` processes.

Two processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo collectives) must end with the
parameters of one process x 4 devices, and their checkpoint must restore in a single process.
A SIGTERM mid-run must leave a checkpoint from which a restart continues.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import gan, sharding
from tests.conftest import TEST_XLA_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _train_cmd(workdir, *extra):
  return [sys.executable, "-m", "jaxgan.cli", "train", "--config", TINY, "--workdir",
          str(workdir), "--quiet", "--data-mode", "replicate", *extra]


def _restore(workdir, config):
  engine = gan.Engine(config, sharding.make_mesh())
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), every=1, keep=3)
  state, step = ckpt.restore_latest(engine.abstract_with_shardings())
  ckpt.close()
  return jax.device_get(state), step


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  # SGD: Adam would amplify reduction-order rounding in zero-gradient weights (see test_train).
  steps = ["--config.train.num_steps=5", "--config.train.ckpt_every=5",
           "--config.g_optim.name=sgd", "--config.d_optim.name=sgd"]
  port = _free_port()
  procs = [
      subprocess.Popen(
          _train_cmd(tmp_path / "multi", *steps, "--coordinator", f"127.0.0.1:{port}",
                     "--num-processes", "2", "--process-id", str(i)),
          env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  single = subprocess.run(_train_cmd(tmp_path / "single", *steps), env=_env(4),
                          capture_output=True, text=True, timeout=300)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert single.returncode == 0, single.stderr[-3000:]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  config = config_lib.load_config(TINY, steps)
  multi, step_m = _restore(tmp_path / "multi", config)    # written by 2 processes
  one, step_1 = _restore(tmp_path / "single", config)
  assert step_m == step_1 == 5
  for x, y in zip(jax.tree.leaves(multi), jax.tree.leaves(one)):
    # gloo and in-process all-reduces sum in different orders: equal up to float rounding.
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_sigterm_saves_and_restart_continues(tmp_path):
  workdir = tmp_path / "run"
  cmd = _train_cmd(workdir, "--config.train.num_steps=100000", "--config.train.ckpt_every=1000")
  proc = subprocess.Popen(cmd, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  # Wait until it is really training (TensorBoard events appear once the loop has started).
  deadline = time.time() + 240
  events = workdir / "tensorboard"
  while time.time() < deadline and not (events.exists() and any(events.iterdir())):
    time.sleep(0.5)
  time.sleep(2.0)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out[-3000:]
  config = config_lib.load_config(TINY)
  _, stopped_at = _restore(workdir, config)
  # Saved at the step it was stopped, not at the last interval (1000): nothing lost.
  assert stopped_at is not None and 0 < stopped_at < 1000
  target = stopped_at + 7
  again = subprocess.run(_train_cmd(workdir, f"--config.train.num_steps={target}"),
                         env=_env(1), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  _, final = _restore(workdir, config)
  assert final == target


def _wait_for_training(workdir, procs, timeout=300):
  """Until TensorBoard events appear (the loop has started), failing early if a process died."""
  deadline = time.time() + timeout
  events = workdir / "tensorboard"
  while not (events.exists() and any(events.iterdir())):
    assert time.time() < deadline, "training never started"
    for p in procs:
      assert p.poll() is None, p.communicate()[0][-3000:]
    time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  workdir = tmp_path / "run"
  port = _free_port()
  procs = [
      subprocess.Popen(
          _train_cmd(workdir, "--config.train.num_steps=100000",
                     "--config.train.ckpt_every=1000", "--coordinator", f"127.0.0.1:{port}",
                     "--num-processes", "2", "--process-id", str(i)),
          env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    _wait_for_training(workdir, procs)
    time.sleep(2.0)
    procs[1].send_signal(signal.SIGTERM)    # a preempted worker: not the coordinator
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  stops = [re.findall(r"stopping at step (\d+) on request", out) for out in outs]
  assert stops[0] and stops[0] == stops[1], outs   # both hosts, the same step
  stopped_at = int(stops[0][0])
  config = config_lib.load_config(TINY)
  _, saved = _restore(workdir, config)
  assert saved == stopped_at and 0 < saved < 1000
  # The rerun (one process here) resumes at that step: nothing lost.
  again = subprocess.run(_train_cmd(workdir, f"--config.train.num_steps={saved + 3}"),
                         env=_env(1), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"at step {saved}" in again.stderr + again.stdout
  assert _restore(workdir, config)[1] == saved + 3


@pytest.mark.slow
def test_a_failure_on_one_process_ends_both_with_its_reason(tmp_path):
  # Process 0 alone writes the run's config.json; here that write fails (the path is a
  # folder). Process 1 must not wait in the next collective until the coordinator's timeout:
  # both exit at once, process 1 with process 0's reason.
  workdir = tmp_path / "run"
  (workdir / "config.json").mkdir(parents=True)
  port = _free_port()
  procs = [
      subprocess.Popen(
          _train_cmd(workdir, "--config.train.num_steps=5", "--coordinator",
                     f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)),
          env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  t0 = time.monotonic()
  try:
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  elapsed = time.monotonic() - t0
  for p, out in zip(procs, outs):
    assert p.returncode not in (0, None), out[-3000:]
    assert "config" in out and "Traceback" not in out, out[-3000:]
  assert "process 0:" in outs[1], outs[1][-3000:]
  assert elapsed < 120, elapsed      # far below a collective's timeout
  checkpoints = workdir / "checkpoints"
  assert not checkpoints.exists() or not any(checkpoints.iterdir())
