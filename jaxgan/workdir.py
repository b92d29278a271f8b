"""A run's folder: where each file lives, and the config saved with the run.

    WORKDIR/config.json           the config the run trains (saved when training starts)
    WORKDIR/checkpoints/<step>    the latest checkpoints (Orbax)
    WORKDIR/best/checkpoints/...  the checkpoint with the best train.best_metric so far
    WORKDIR/best/best.json        its step and value
    WORKDIR/rollbacks.json        learning-rate cuts after non-finite values (nonfinite.py)
    WORKDIR/tensorboard, WORKDIR/xla_cache, WORKDIR/profile

Only paths here (no imports beyond the standard library), so that light readers such as the
gallery use them too; config.py reads and writes the config.
"""

from __future__ import annotations

import os

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
BEST_INFO = "best.json"
ROLLBACKS = "rollbacks.json"
XLA_CACHE = "xla_cache"


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def checkpoints(workdir: str, *, best: bool = False) -> str:
  """The folder of the latest checkpoints, or with best=True of the best one."""
  return os.path.join(workdir, BEST, CHECKPOINTS) if best else os.path.join(workdir, CHECKPOINTS)


def best_info(workdir: str) -> str:
  return os.path.join(workdir, BEST, BEST_INFO)


def rollbacks(workdir: str) -> str:
  return os.path.join(workdir, ROLLBACKS)


def xla_cache(workdir: str) -> str:
  return os.path.join(workdir, XLA_CACHE)
