"""`make demo`: the main job end to end on the embedded Bach chorales.

Builds the standard-split chorale data set (once), trains a small voices model for a bounded
run (configs/jsb_chorale.py:demo, resuming if runs/demo exists), samples MIDI files and a
piano-roll PNG, prints the chorale measures against the test split, and with the chorale model
shipped in the package (`--pretrained jsb`) restores bars 3-4 of a test chorale it never saw
("music restoration": every other note comes back unchanged) and writes alto, tenor and bass
under its soprano.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_chorale(path: str, config) -> bool:
  """Writes the first 8-bar window of the standard test split as MIDI (SATB tracks)."""
  from jaxgan import evaluate, sample  # pylint: disable=import-outside-toplevel
  windows = evaluate.split_windows(config, "test", bars=8)
  if not len(windows):
    return False
  gen = sample.Generator.from_export(sample.pretrained_path("jsb"))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  gen.write_midi(windows[0], path)
  return True


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  workdir = argv[0] if argv else "runs/demo"
  from jaxgan import cli, config as config_lib  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  print("== 1/5 prepare: jsb_chorales_standard (the standard 229/76/77 split)", flush=True)
  if cli.main(["prepare", "jsb_chorales_standard", "--quiet"]):
    return 1
  config = os.path.join(ROOT, "configs", "jsb_chorale.py") + ":demo"
  print(f"== 2/5 train: {os.path.relpath(config, ROOT)} in {workdir}", flush=True)
  if cli.main(["train", "--config", config, "--workdir", workdir]):
    return 1
  print("== 3/5 sample: 8 pieces of 8 bars", flush=True)
  if cli.main(["sample", "--workdir", workdir, "--num", "8", "--bars", "8",
               "--out", os.path.join(workdir, "samples")]):
    return 1
  print("== 4/5 eval: the demo model against Bach's test chorales", flush=True)
  cli.main(["eval", "--workdir", workdir, "--num", "32"])
  print("== 5/5 restore and accompany a test chorale with the shipped model (--pretrained jsb)",
        flush=True)
  folder = os.path.join(workdir, "restore")
  chorale = os.path.join(folder, "chorale.mid")
  if held_out_chorale(chorale, config_lib.load_config(config)):
    cli.main(["inpaint", "--pretrained", "jsb", "--input", chorale, "--bars", "3-4",
              "--out", os.path.join(folder, "restored.mid")])
    cli.main(["accompany", "--pretrained", "jsb", "--input", chorale, "--given", "soprano",
              "--out", os.path.join(folder, "accompanied.mid")])
  print(f"demo done in {time.time() - t0:.0f} s: TensorBoard logs in {workdir}/tensorboard, "
        f"checkpoints in {workdir}/checkpoints, MIDI in {workdir}/samples and {folder} "
        "(`jaxgan render FILE.mid` makes WAVs)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
