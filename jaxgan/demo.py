"""`make demo`: the main job end to end on the embedded Bach chorales.

Builds the jsb_chorales data set from the music21 corpus (once), trains the jsb_musegan config
for a bounded run (resuming if runs/demo exists), samples MIDI files and a piano-roll PNG from
the EMA generator, and prints the evaluation table (data vs generated).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  workdir = argv[0] if argv else "runs/demo"
  from jaxgan import cli  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  print("== 1/4 prepare: jsb_chorales from the music21 corpus", flush=True)
  cli.main(["prepare", "jsb_chorales"])
  print(f"== 2/4 train: configs/jsb_musegan.py:demo in {workdir}", flush=True)
  config = os.path.join(ROOT, "configs", "jsb_musegan.py") + ":demo"
  if cli.main(["train", "--config", config, "--workdir", workdir]):
    return 1
  print("== 3/4 sample: 8 pieces of 8 bars", flush=True)
  cli.main(["sample", "--workdir", workdir, "--num", "8", "--bars", "8",
            "--out", os.path.join(workdir, "samples")])
  print("== 4/4 eval: test split vs EMA samples", flush=True)
  cli.main(["eval", "--workdir", workdir, "--num", "128"])
  print(f"demo done in {time.time() - t0:.0f} s: TensorBoard logs in {workdir}/tensorboard, "
        f"checkpoints in {workdir}/checkpoints, MIDI in {workdir}/samples", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
