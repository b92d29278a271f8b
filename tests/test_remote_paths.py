"""Workdirs and data on shared storage: a whole cycle on a non-local file system, and the
rule that workdir/data modules reach files only through jaxgan.paths.

The cycle runs on TensorFlow's in-memory `ram://` file system, in this process (ram:// lives in
the process). Two parts cannot live there, for reasons outside jaxgan:
- Orbax writes arrays through tensorstore, which has no ram:// driver (only gs:// among URLs;
  its file driver needs an absolute local path), so the run's checkpoints go to a local mirror
  (`ckpt_lib.orbax_path` patched); every other file of the run is in ram://.
- TFDS builds a data set in a temporary folder that it renames into place, and ram:// renames a
  folder without the files in it: the data set is built locally and copied into ram://, from
  where training, sampling and evaluation read it. Both Orbax and TFDS name paths with
  etils.epath, which knows no ram://: `_epath_knows_ram` teaches it (test only).
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow as tf

from jaxgan import checkpoint as ckpt_lib
from jaxgan import cli, distributed, errors, lock, paths, sample
from jaxgan.data import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


@pytest.fixture
def _epath_knows_ram(monkeypatch):
  """etils.epath (TFDS's and Orbax's paths) reads ram:// through tf.io.gfile, as it does gs://."""
  from etils.epath import backend, gpath, register  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(gpath, "_URI_PREFIXES", gpath._URI_PREFIXES + ("ram://",))
  monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
  monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", backend.tf_backend)
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)


def _copy_tree(src: str, dst: str) -> None:
  for root, _, files in tf.io.gfile.walk(src):
    target = os.path.join(dst, os.path.relpath(root, src))
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}", overwrite=True)


def test_paths_keep_urls_and_speak_ram():
  assert paths.resolve("gs://b/runs/x/") == "gs://b/runs/x"
  assert paths.resolve("runs/x") == os.path.join(os.getcwd(), "runs", "x")
  assert paths.join("gs://b/runs", "x", "config.json") == "gs://b/runs/x/config.json"
  assert paths.dirname("gs://b/runs/x") == "gs://b/runs"
  root = "ram://paths_unit/a"
  paths.makedirs(paths.join(root, "sub"))
  paths.write_atomic(paths.join(root, "f.json"), '{"v": 1, "w": 2}')
  paths.write_atomic(paths.join(root, "f.json"), '{"v": 1}')   # replaced, not appended to
  assert json.loads(paths.read_text(paths.join(root, "f.json"))) == {"v": 1}
  assert sorted(paths.listdir(root)) == ["f.json", "sub"]
  assert paths.isdir(paths.join(root, "sub")) and paths.isfile(paths.join(root, "f.json"))
  paths.write_text(paths.join(root, "sub", "g"), "x")
  paths.replace(paths.join(root, "sub"), paths.join(root, "moved"))   # a folder, with its file
  assert paths.read_text(paths.join(root, "moved", "g")) == "x"
  assert not paths.exists(paths.join(root, "sub"))
  with pytest.raises(FileNotFoundError, match="ram://paths_unit/a/none"):
    paths.read_text(paths.join(root, "none"))
  paths.rmtree(root)
  assert not paths.exists(root)
  with pytest.raises(errors.ConfigError, match="must be a local folder or file, not gs://b/s"):
    paths.local_only("gs://b/s", "the samples folder")


def test_lock_on_ram_is_taken_refused_and_released():
  workdir = "ram://lock_unit/run"
  with lock.WorkdirLock(workdir, refresh_s=3600) as held:
    assert held.read()["token"] == held.mine["token"]
    with pytest.raises(lock.WorkdirBusy, match="ram://lock_unit/run is in use"):
      lock.WorkdirLock(workdir).acquire()
  assert not paths.exists(paths.join(workdir, lock.LOCK_FILE))


def test_whole_cycle_on_ram(tmp_path, monkeypatch, caplog, _epath_knows_ram):
  local_data = str(tmp_path / "data")
  prepare.prepare("jsb_chorales", data_dir=local_data, max_songs=12, progress=False)
  data = "ram://cycle/data"
  _copy_tree(local_data, data)
  assert prepare.dataset_info("jsb_chorales", data_dir=data).num_examples["train"] > 0

  mirror = tmp_path / "checkpoints"   # tensorstore cannot write ram:// (module docstring)
  monkeypatch.setattr(ckpt_lib, "orbax_path", lambda d: ckpt_lib.epath.Path(
      str(mirror / d.replace("ram://", ""))))
  workdir = "ram://cycle/run"
  overrides = ["--config.data.name=jsb_chorales", f"--config.data.data_dir={data}",
               "--config.data.num_tracks=4", "--config.data.meter=(4, 4)",
               "--config.data.transpose=0", "--config.loss.n_critic=1",
               "--config.train.ckpt_every=2", "--config.train.eval_every=2",
               "--config.train.eval_num=8", "--config.train.best_metric=eval/UPC/track0"]
  cwd = set(os.listdir(os.getcwd()))

  def train(steps: int) -> None:
    assert cli.main(["train", "--config", TINY, "--workdir", workdir, "--quiet",
                     f"--config.train.num_steps={steps}", *overrides]) == 0

  train(2)
  names = set(paths.listdir(workdir))
  assert {"config.json", "tensorboard", "best"} <= names and "train.lock" not in names
  assert json.loads(paths.read_text(paths.join(workdir, "best", "best.json")))["step"] == 2
  assert paths.listdir(paths.join(workdir, "tensorboard"))
  assert sorted(os.listdir(mirror / "cycle" / "run" / "checkpoints")) == ["2"]

  with caplog.at_level("INFO", logger="jaxgan"):
    train(4)   # resumes at the saved step
  assert "resumed from ram://cycle/run/checkpoints at step 2" in caplog.text
  assert "4" in os.listdir(mirror / "cycle" / "run" / "checkpoints")

  gen = sample.Generator.from_workdir(workdir)
  assert gen.step == 4 and len(gen.tracks) == 4
  rolls = sample.sample(gen, jax.random.PRNGKey(0), 2)
  assert np.asarray(rolls).shape[0] == 2
  out = "ram://cycle/eval.json"
  assert cli.main(["eval", "--workdir", workdir, "--num", "4", "--out", out]) == 0
  assert json.loads(paths.read_text(out))["step"] == 4
  assert cli.main(["eval", "--workdir", workdir, "--num", "4"]) == 0   # WORKDIR/eval_4.json
  assert paths.exists(paths.join(workdir, "eval_4.json"))
  # Nothing landed in the current folder as "ram:/..." (what abspath makes of a URL).
  assert set(os.listdir(os.getcwd())) == cwd


# --------------------------------------------------------------------------------------------
# Failing together (distributed.agree_ok): the single-process path and the agreement logic.


def test_agreement_is_free_and_plain_with_one_process():
  assert jax.process_count() == 1
  distributed.agree_ok(True, "unused")
  with pytest.raises(errors.ConfigError, match="^no windows$"):
    distributed.agree_ok(False, "no windows", errors.ConfigError)
  assert distributed.agreed(lambda x: x + 1, 1) == 2
  with pytest.raises(FileNotFoundError):
    distributed.agreed(paths.read_text, "/nonexistent/x")
  assert distributed.all_true(True) and not distributed.all_true(False)
  assert distributed.from_lead(True)


def test_every_process_raises_the_first_failure():
  rows = np.stack([
      distributed._encode(True, "", RuntimeError),
      distributed._encode(False, "data.n_bars=99: no windows on this host", errors.ConfigError),
      distributed._encode(False, "cannot write x to gs://b/y: quota", errors.WriteError),
  ])
  assert distributed.decide(rows[:1], 0) is None
  elsewhere = distributed.decide(rows, 0)
  assert type(elsewhere) is errors.ConfigError
  assert str(elsewhere) == "process 1: data.n_bars=99: no windows on this host"
  own = distributed.decide(rows, 1)
  assert str(own) == "data.n_bars=99: no windows on this host"
  relayed = distributed.decide(rows[[0, 2]], 0)   # a write error stays a WriteError
  assert isinstance(relayed, errors.WriteError) and "gs://b/y: quota" in str(relayed)
  # Unknown types travel as their nearest known base; long messages are cut, not lost.
  odd = distributed.decide(np.stack([distributed._encode(False, "é" * 5000, KeyError),
                                     distributed._encode(True, "", RuntimeError)]), 1)
  assert type(odd) is RuntimeError and str(odd) == "process 0: " + "é" * 1000


# --------------------------------------------------------------------------------------------
# Workdir and data modules reach files only through jaxgan.paths.

GUARDED = ["train.py", "checkpoint.py", "lock.py", "workdir.py", "evaluate.py", "summary.py",
           "config.py", "profiling.py", "sample.py", "cli.py", "gallery.py", "distributed.py",
           "data/prepare.py", "data/builders.py", "midi/events.py", "nonfinite.py"]
# (module, line fragment): why that use is local-only.
ALLOWED = {
    ("lock.py", 'open(f"/proc/{pid}/stat")'): "this host's process table",
    ("sample.py", "os.path.abspath(__file__)"): "the package's shipped models",
    ("cli.py", "os.path.abspath(args.out)"): "inpaint/accompany MIDI, written by miditoolkit",
    ("gallery.py", "os.path.abspath"): "the gallery is local HTML beside local MIDI files",
    ("gallery.py", "open("): "the gallery is local HTML beside local MIDI files",
    ("data/builders.py", "os.path.abspath(manual_dir)"): "the MIDI folder, read by miditoolkit",
    ("data/builders.py", "os.path.abspath(os.fspath(dl_manager"): "the MIDI folder, likewise",
}
PATTERN = re.compile(r"(?<![\w.])open\(|os\.path\.abspath\(|os\.replace\(")


def test_workdir_modules_use_the_path_layer():
  found = []
  for module in GUARDED:
    with open(os.path.join(ROOT, "jaxgan", module)) as f:
      for number, line in enumerate(f, 1):
        if PATTERN.search(line) and not any(
            m == module and fragment in line for m, fragment in ALLOWED):
          found.append(f"jaxgan/{module}:{number}: {line.strip()}")
  assert not found, "use jaxgan.paths (or allow-list a local-only use):\n" + "\n".join(found)
