"""`make demo`: the main job end to end on the embedded Bach chorales.

Builds the jsb_chorales data set from the music21 corpus (once), trains the jsb_musegan config
for a bounded run (resuming if runs/demo exists), samples MIDI files and a piano-roll PNG from
the EMA generator, prints the evaluation table (data vs generated), and restores bars 3-4 of a
held-out chorale ("music restoration": every other note comes back unchanged).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_chorale(path: str) -> str | None:
  """Writes the first test-split chorale (voices in SATB order) as MIDI; its name, or None."""
  from jaxgan.data import corpus  # pylint: disable=import-outside-toplevel
  for piece in corpus.chorale_pieces():
    if corpus.split_of(piece.name) != "test":
      continue
    converted = corpus.piece_to_midi(piece)
    if converted.midi is not None and tuple(converted.voices) == (0, 1, 2, 3):
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      with open(path, "wb") as f:
        f.write(converted.midi)
      return piece.name
  return None


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  workdir = argv[0] if argv else "runs/demo"
  from jaxgan import cli  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  print("== 1/5 prepare: jsb_chorales from the music21 corpus", flush=True)
  cli.main(["prepare", "jsb_chorales"])
  print(f"== 2/5 train: configs/jsb_musegan.py:demo in {workdir}", flush=True)
  config = os.path.join(ROOT, "configs", "jsb_musegan.py") + ":demo"
  if cli.main(["train", "--config", config, "--workdir", workdir]):
    return 1
  print("== 3/5 sample: 8 pieces of 8 bars", flush=True)
  cli.main(["sample", "--workdir", workdir, "--num", "8", "--bars", "8",
            "--out", os.path.join(workdir, "samples")])
  print("== 4/5 eval: test split vs EMA samples", flush=True)
  cli.main(["eval", "--workdir", workdir, "--num", "128"])
  chorale = os.path.join(workdir, "restore", "chorale.mid")
  name = held_out_chorale(chorale)
  if name:
    print(f"== 5/5 inpaint: bars 3-4 of the held-out chorale {name}", flush=True)
    cli.main(["inpaint", "--workdir", workdir, "--input", chorale, "--bars", "3-4",
              "--out", os.path.join(workdir, "restore", "restored.mid")])
  print(f"demo done in {time.time() - t0:.0f} s: TensorBoard logs in {workdir}/tensorboard, "
        f"checkpoints in {workdir}/checkpoints, MIDI in {workdir}/samples and "
        f"{workdir}/restore", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
