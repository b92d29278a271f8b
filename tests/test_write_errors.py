"""Failed writes: a checkpoint save that fails (a full disk), TensorBoard, config.json and
images; and a trainer killed with SIGKILL in the middle of its saves."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.serialization import serialization as orbax_serialization

from jaxgan import checkpoint as ckpt_lib
from jaxgan import cli, errors, nonfinite, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
RUN = ["--quiet", "--config.train.num_steps=12", "--config.train.ckpt_every=4",
       "--config.train.log_every=2"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
# How tensorstore (Orbax's array writer) reports a full disk: a ValueError carrying the code.
TENSORSTORE_ENOSPC = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/x/": Failed '
    'writing: "/x/d/abc": Failed to write 4096 bytes to file 4: No space left on device '
    "[os_error_code='28']")


class _Disk:
  """Orbax's array writer, made to fail while `full` is set (or `full_once`: one save)."""

  def __init__(self, monkeypatch, error):
    self.full, self.full_once, self.failures = False, False, 0
    real = orbax_serialization.async_serialize_from_host

    async def write(*args, **kwargs):
      if self.full or self.full_once:
        self.failures += 1
        raise error
      return await real(*args, **kwargs)

    monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", write)

  def saved(self):
    self.full_once = False


def _steps(directory):
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _leftovers(directory):
  return [n for n in os.listdir(directory) if not n.isdigit()]


@pytest.mark.parametrize("error", [ENOSPC, TENSORSTORE_ENOSPC], ids=["oserror", "tensorstore"])
def test_failed_save_is_one_error_and_the_previous_checkpoint_stays(tmp_path, monkeypatch,
                                                                    caplog, capfd, error):
  disk = _Disk(monkeypatch, error)
  directory = tmp_path / "ck"
  state = {"w": jnp.arange(1000.0), "step": jnp.int32(1)}
  ck = ckpt_lib.Checkpointer(directory, every=1, keep=1)
  assert ck.save(1, state, force=True)
  ck.wait()
  disk.full = True
  with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
    ck.save(2, jax.tree.map(lambda x: x + 1, state), force=True)
    ck.wait()
  ck.close()
  assert disk.failures > 0
  e = info.value
  assert (e.step, e.path) == (2, str(directory / "2"))
  assert str(e) == (f"cannot write checkpoint of step 2 to {directory / '2'}: "
                    "No space left on device (ENOSPC)")
  assert _steps(directory) == [1] and _leftovers(directory) == []   # rotation kept step 1
  restored, step = ckpt_lib.Checkpointer(directory, every=1, keep=1).restore_latest(
      jax.eval_shape(lambda: state))
  assert step == 1
  np.testing.assert_array_equal(restored["w"], np.arange(1000.0))
  assert "Traceback" not in capfd.readouterr().err
  assert not [r for r in caplog.records if r.exc_info]


def test_real_full_disk(tmp_path):
  """The same on a real 600 KB tmpfs, where this process may mount one."""
  mount = tmp_path / "small"
  mount.mkdir()
  if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
      capture_output=True).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    # 360 KB of random floats (they do not compress): one checkpoint fits, two do not.
    state = {"w": jax.random.normal(jax.random.PRNGKey(0), [90000])}
    ck = ckpt_lib.Checkpointer(mount / "ck", every=1, keep=1)
    ck.save(1, state, force=True)
    ck.wait()
    with pytest.raises(ckpt_lib.CheckpointWriteError, match=r"step 2 .*\(ENOSPC\)"):
      ck.save(2, jax.tree.map(lambda x: x + 1, state), force=True)
      ck.wait()
    ck.close()
    assert _steps(mount / "ck") == [1] and _leftovers(mount / "ck") == []
    restored, step = ckpt_lib.Checkpointer(mount / "ck", every=1, keep=1).restore_latest(
        jax.eval_shape(lambda: state))
    assert step == 1
    np.testing.assert_array_equal(restored["w"], state["w"])
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_training_stops_on_a_failed_save_with_one_line(tmp_path, monkeypatch, capfd):
  disk = _Disk(monkeypatch, TENSORSTORE_ENOSPC)
  real_save = ckpt_lib.Checkpointer.save

  def save(self, step, state, **kwargs):
    disk.full = step >= 8   # the disk fills after the checkpoint of step 4
    return real_save(self, step, state, **kwargs)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN])
  err = capfd.readouterr().err
  assert code == 1
  lines = [line for line in err.splitlines() if not line.startswith("INFO ")]
  assert lines == [f"jaxgan train: cannot write checkpoint of step 8 to "
                   f"{tmp_path / 'checkpoints' / '8'}: No space left on device (ENOSPC); "
                   "stopped (train.on_save_error=stop), the checkpoint of step 4 is intact"]
  assert _steps(tmp_path / "checkpoints") == [4]
  assert _leftovers(tmp_path / "checkpoints") == []
  assert not (tmp_path / "train.lock").exists()


def test_on_save_error_retry_tries_at_the_next_interval(tmp_path, monkeypatch, caplog):
  disk = _Disk(monkeypatch, ENOSPC)
  real_save = ckpt_lib.Checkpointer.save

  def save(self, step, state, **kwargs):
    disk.full_once = step == 8   # one save fails; the disk has room again after
    return real_save(self, step, state, **kwargs)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
  assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN,
                   "--config.train.on_save_error=retry"]) == 0
  assert ("cannot write checkpoint of step 8 to "
          f"{tmp_path / 'checkpoints' / '8'}: No space left on device (ENOSPC); trying again "
          "at the next interval (train.on_save_error=retry)") in caplog.text
  assert _steps(tmp_path / "checkpoints") == [4, 12]
  assert _leftovers(tmp_path / "checkpoints") == []


def test_tensorboard_write_errors_name_the_folder(tmp_path, monkeypatch):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  writer = summary.Writer(str(tmp_path))

  def full(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{tmp_path}/tensorboard/events.out.tfevents.1; No space left on device\n"
        "\tFailed to flush 2 events")

  monkeypatch.setattr(tf.summary, "scalar", full)
  with pytest.raises(errors.WriteError) as info:
    writer.scalars(3, {"d_loss": 1.0})
  assert str(info.value) == (f"cannot write TensorBoard events to {tmp_path / 'tensorboard'}: "
                             "No space left on device")
  monkeypatch.undo()
  writer.close()


def test_config_and_image_write_errors_are_one_line(tmp_path, capsys):
  (tmp_path / "config.json").mkdir()   # something in the way of the file
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN])
  assert code == 1
  assert capsys.readouterr().err.strip() == (
      f"jaxgan train: cannot write the run's config to {tmp_path / 'config.json'}: "
      "Is a directory (EISDIR)")
  assert not (tmp_path / "checkpoints").exists()
  with pytest.raises(errors.WriteError, match=r"cannot write the image to .*\(ENOENT\)"):
    summary.save_png(np.zeros([4, 4, 3], np.uint8), str(tmp_path / "no" / "such" / "x.png"))


def _kill_env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop(nonfinite.FAULT_ENV, None)
  return env


def _final_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, jax.tree.map(np.asarray, state["state"])


@pytest.mark.slow
def test_kill_9_during_saves_then_rerun_resumes_exactly(tmp_path):
  steps = 10
  args = ["train", "--config", TINY, "--quiet", f"--config.train.num_steps={steps}",
          "--config.train.log_every=5"]
  # The uninterrupted run, in this process (it also fills the compilation cache).
  assert cli.main([*args, "--workdir", str(tmp_path / "whole"),
                   f"--config.train.ckpt_every={steps}"]) == 0
  workdir = tmp_path / "killed"
  every_step = [*args, "--workdir", str(workdir), "--config.train.ckpt_every=1"]
  proc = subprocess.Popen([sys.executable, "-m", "jaxgan.cli", *every_step], env=_kill_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  folder = workdir / "checkpoints"
  mid_save = False
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      names = os.listdir(folder) if folder.is_dir() else []
      done = [int(n) for n in names if n.isdigit()]
      mid_save = any(ckpt_lib.TMP_MARK in n for n in names)
      if done and max(done) >= 2 and mid_save:
        break
      time.sleep(0.001)
  finally:
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1]
  assert proc.returncode == -signal.SIGKILL, err[-3000:]
  killed_at = _steps(folder)
  assert killed_at and killed_at[-1] < steps, killed_at   # it really was cut short
  assert json.loads((workdir / "train.lock").read_text())["pid"] == proc.pid   # left behind
  # The rerun takes the dead trainer's lock, drops its half-written save and resumes.
  assert cli.main(every_step) == 0
  assert _leftovers(folder) == []
  step_a, whole = _final_state(tmp_path / "whole")
  step_b, resumed = _final_state(workdir)
  assert step_a == step_b == steps
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
