"""A trained tiny run for tests that need a workdir: `jaxgan train` of configs/tiny.py."""

import os

from jaxgan import cli

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                    "tiny.py")


def train_tiny(workdir, *overrides: str, steps: int = 5):
  """Trains `steps` steps into `workdir` with one checkpoint at the end; returns `workdir`.

  Every caller with the same overrides shares the compilations in the persistent XLA cache.
  """
  assert cli.main(["train", "--config", TINY, "--workdir", str(workdir), "--quiet",
                   f"--config.train.num_steps={steps}", f"--config.train.ckpt_every={steps}",
                   *overrides]) == 0
  return workdir
