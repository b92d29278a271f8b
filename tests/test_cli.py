"""The `jaxgan` command line end to end on tiny runs: prepare, train, sample, eval."""

import json
import os

import jax
import miditoolkit
import numpy as np
import pytest

from jaxgan import cli, sample
from tests.test_data_build import _write_song
from tests.tiny_run import train_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_prepare_midi_folder_lists_skipped_files(tmp_path, capsys):
  folder = tmp_path / "midi"
  folder.mkdir()
  for i in range(3):
    _write_song(str(folder / f"good{i}.mid"), i)
  (folder / "garbage.mid").write_bytes(os.urandom(300))
  good = (folder / "good0.mid").read_bytes()
  (folder / "truncated.mid").write_bytes(good[:len(good) // 2])
  code = cli.main(["prepare", "midi_folder", "--manual-dir", str(folder),
                   "--data-dir", str(tmp_path / "data"), "--quiet"])
  out = capsys.readouterr().out
  assert code == 0
  assert "garbage.mid" in out and "truncated.mid" in out
  skipped = json.loads(next((tmp_path / "data").rglob("skipped.json")).read_text())
  assert len(skipped) == 2 if isinstance(skipped, list) else len(skipped["files"]) == 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return train_tiny(tmp_path_factory.mktemp("run"))


def test_bad_override_fails_before_training(tmp_path, capsys):
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), "--quiet",
                   "--config.loss.kind=wasserstein"])
  assert code == 2
  assert "loss.kind='wasserstein' is not one of" in capsys.readouterr().err
  assert not (tmp_path / "checkpoints").exists()


def test_sample_writes_midi_png_and_metrics(run, tmp_path, capsys):
  out = tmp_path / "samples"
  assert cli.main(["sample", "--workdir", str(run), "--num", "3", "--bars", "5",
                   "--out", str(out), "--seed", "1"]) == 0
  mids = sorted(out.glob("*.mid"))
  assert len(mids) == 3
  midi = miditoolkit.MidiFile(str(mids[0]))
  assert len(midi.instruments) == 2  # the tiny config's two tracks
  assert midi.time_signature_changes[0].numerator == 4
  # 5 bars of 4 beats were asked for: no note starts past them.
  assert max(n.start for i in midi.instruments for n in i.notes) < 5 * 4 * midi.ticks_per_beat
  assert (out / "samples.png").stat().st_size > 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num"] == 3 and "UPC" in metrics["metrics"]
  assert "UPC" in capsys.readouterr().out


def test_sampler_is_deterministic_and_chains_phrases(run):
  gen = sample.Generator.from_workdir(str(run))
  a = sample.sample(gen, jax.random.PRNGKey(0), 8, bars=5)
  b = sample.sample(gen, jax.random.PRNGKey(0), 8, bars=5)
  c = sample.sample(gen, jax.random.PRNGKey(1), 8, bars=5)
  assert a.shape == (8, 5, 8, 36, 2) and a.dtype == bool
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  morph = sample.interpolate(gen, jax.random.PRNGKey(0), jax.random.PRNGKey(1), 4)
  assert morph.shape == (8, 8, 36, 2)  # 4 phrases of 2 bars
  # The ends of the interpolation are the two seeds' own phrases.
  ends = sample.decode_latents(
      gen, jax.numpy.concatenate([sample.latents(jax.random.PRNGKey(k), 1, gen.engine.latent_size)
                                  for k in (0, 1)]), jax.random.fold_in(jax.random.PRNGKey(0), 7))
  np.testing.assert_array_equal(morph[:2], ends[0])
  np.testing.assert_array_equal(morph[-2:], ends[1])


def test_eval_prints_data_vs_generated(run, tmp_path, capsys):
  out = tmp_path / "eval.json"
  assert cli.main(["eval", "--workdir", str(run), "--num", "16", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "data" in printed and "generated" in printed and "EB" in printed
  result = json.loads(out.read_text())
  assert result["num_generated"] == 16 and result["num_real"] == 16
  assert "OA" in next(iter(result["set_comparison"].values()))


def test_periodic_evaluation_writes_metrics_to_tensorboard(tmp_path):
  assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), "--quiet",
                   "--config.train.num_steps=4", "--config.train.eval_every=2",
                   "--config.train.eval_num=8", "--config.train.log_every=2"]) == 0
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tags = set()
  for path in (tmp_path / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  assert "eval/EB/track0" in tags and "eval/UPC/track1" in tags
  assert "d_loss" in tags and "g_grad_norm" in tags and "examples_per_s" in tags
