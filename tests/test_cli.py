"""The `jaxgan` command line end to end on tiny runs: prepare, train, sample, eval."""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import jax
import miditoolkit
import numpy as np
import pytest

from jaxgan import cli, sample
from jaxgan import config as config_lib
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


# --- A newcomer's edges: version, help, unknown arguments, missing things --------------------


def _command_parsers(parser, name="jaxgan"):
  """(name, parser) of the program and of every subcommand."""
  yield name, parser
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for sub, sub_parser in action.choices.items():
        yield from _command_parsers(sub_parser, f"{name} {sub}")


def test_version_comes_from_the_package(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["--version"])
  assert info.value.code == 0
  assert capsys.readouterr().out.strip() == f"jaxgan {importlib.metadata.version('jaxgan')}"


def test_every_option_of_every_command_has_help():
  parsers = dict(_command_parsers(cli.build_parser()))
  assert {"jaxgan train", "jaxgan sample", "jaxgan prepare", "jaxgan profile"} <= set(parsers)
  missing = [f"{name}: {action.option_strings or action.dest}"
             for name, parser in parsers.items() for action in parser._actions  # noqa
             if not isinstance(action, argparse._SubParsersAction)  # pylint: disable=protected-access
             and (not action.help or action.help == argparse.SUPPRESS)]
  assert missing == []


@pytest.mark.parametrize("argv", [
    ["prepare", "jsb_chorales", "--bogus"],
    ["train", "--config", TINY, "--workdir", "W", "--bogus"],
    ["train", "--config", TINY, "--workdir", "W", "--config.train.num_steps=3", "stray"],
    ["profile", "--config", TINY, "--config.train.num_steps", "3", "--bogus=1"],
    ["sample", "--workdir", "W", "--bogus"],
    ["inpaint", "--workdir", "W", "--input", "x.mid", "--bars", "1", "--out", "y.mid", "-x"],
    ["accompany", "--workdir", "W", "--input", "x.mid", "--given", "a", "--out", "y", "--zz"],
    ["render", "x.mid", "--bogus"],
    ["gallery", "--bogus"],
    ["eval", "--workdir", "W", "--bogus"],
    ["export", "--workdir", "W", "--out", "O", "--bogus"],
], ids=lambda argv: argv[0] + ("-override" if "stray" in argv else ""))
def test_unknown_arguments_exit_2_with_usage(argv, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(argv)
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f"usage: jaxgan {argv[0]} ")
  assert f"jaxgan {argv[0]}: error: unrecognized arguments: {argv[-1]}" in err


def test_gallery_without_a_source_is_a_usage_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["gallery"])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("usage: jaxgan gallery ") and "give --workdir, --samples or both" in err
  assert cli.main(["gallery", "--samples", str(tmp_path)]) == 1
  assert capsys.readouterr().err.strip() == (
      f"jaxgan gallery: no MIDI files in {tmp_path}: give --workdir to sample some")


def test_train_takes_config_overrides_in_both_forms():
  args = cli.build_parser().parse_args(["train", "--config", TINY, "--workdir", "W"])
  assert cli._unknown_arguments(  # pylint: disable=protected-access
      args, ["--config.train.num_steps=3", "--config.loss.kind", "hinge"]) == []


@pytest.mark.parametrize("command", ["sample", "eval", "export"])
def test_missing_workdir_or_checkpoint_says_what_to_run(command, tmp_path, capsys):
  extra = ["--out", str(tmp_path / "out")] if command == "export" else []
  empty = tmp_path / "empty"
  empty.mkdir()
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  (untrained / "config.json").write_text(config_lib.load_config(TINY).to_json_best_effort())
  for workdir, says in ((tmp_path / "nowhere", "no such workdir"),
                        (empty, "has no config.json"),
                        (untrained, f"no checkpoint in {untrained / 'checkpoints'}")):
    assert cli.main([command, "--workdir", str(workdir), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert says in err and "`jaxgan train --config CONFIG --workdir " in err


def test_unbuilt_data_set_is_one_line_without_tensorflow_banners(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env["JAX_PLATFORMS"] = "cpu"
  data = tmp_path / "data"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxgan.cli", "train", "--config", TINY, "--workdir",
       str(tmp_path / "run"), "--quiet", "--config.data.name=jsb_chorales",
       f"--config.data.data_dir={data}"], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  # All of stderr: TensorFlow was imported (to look for the data set) and said nothing.
  assert proc.stderr.splitlines() == [
      f"jaxgan train: data set 'jsb_chorales' is not built in {data}: run "
      f"`jaxgan prepare jsb_chorales --data-dir {data}` first"]


def test_prepare_lists_every_builder_and_reports_write_errors(monkeypatch, capsys):
  from jaxgan.data import builders, prepare  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    cli.main(["prepare", "--help"])
  shown = capsys.readouterr().out
  names = [b.name for b in builders._SongBuilder.__subclasses__()]  # pylint: disable=protected-access
  assert "jsb_chorales_standard" in names and set(names) == set(cli.DATASETS)
  for name in names:
    assert f"\n  {name} " in shown

  def full(name, **kwargs):
    raise prepare.DataWriteError(name, "/data/jsb_chorales", "No space left on device")

  monkeypatch.setattr(prepare, "prepare", full)
  assert cli.main(["prepare", "jsb_chorales", "--quiet"]) == 1
  assert capsys.readouterr().err.strip() == (
      "jaxgan prepare: cannot build data set jsb_chorales in /data/jsb_chorales: "
      "No space left on device")


def test_samples_that_cannot_be_written_are_one_line(run, tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("in the way of the output folder")
  assert cli.main(["sample", "--workdir", str(run), "--num", "2",
                   "--out", str(blocker / "samples")]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(blocker) in err, err


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu installed")
def test_commands_do_not_start_libtpu_without_a_tpu():
  from jax._src import hardware_utils  # pylint: disable=import-outside-toplevel
  if hardware_utils.num_available_tpu_chips_and_device_id()[0]:
    pytest.skip("a TPU is attached: libtpu is meant to start")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  # flax is imported after the call, as the commands do: it registers TPU lowerings, which
  # needs "tpu" to stay a known platform.
  code = ("from jaxgan import runtime; {call}; import flax.linen; import jax; "
          "print(jax.jit(lambda x: x + 1)(1), jax.devices()[0].platform)")

  def stderr_of(call: str) -> str:
    done = subprocess.run([sys.executable, "-c", code.format(call=call)], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split()[-1] in ("cpu", "gpu"), done.stdout
    return done.stderr

  # Left alone, JAX starts libtpu, which prints an error on a machine without TPUs; the
  # commands skip it (cli.main calls runtime.skip_absent_tpu first).
  assert "TPU_WORKER_HOSTNAMES" in stderr_of("pass")
  assert "TPU_WORKER_HOSTNAMES" not in stderr_of("assert runtime.skip_absent_tpu()")
