"""A run's folder: where each file lives, and the config saved with the run.

    WORKDIR/config.json           the config the run trains (saved when training starts)
    WORKDIR/checkpoints/<step>    the latest checkpoints (Orbax)
    WORKDIR/best/checkpoints/...  the checkpoint with the best train.best_metric so far
    WORKDIR/best/best.json        its step and value
    WORKDIR/rollbacks.json        learning-rate cuts after non-finite values (nonfinite.py)
    WORKDIR/tensorboard, WORKDIR/xla_cache, WORKDIR/profile

Only paths here (no heavy imports), so that light readers such as the gallery use them too;
config.py reads and writes the config. A workdir may be local or on shared storage
(gs://bucket/run): paths.join keeps a URL a URL.
"""

from __future__ import annotations

from jaxgan import paths

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
BEST_INFO = "best.json"
ROLLBACKS = "rollbacks.json"
XLA_CACHE = "xla_cache"


def config_path(workdir: str) -> str:
  return paths.join(workdir, CONFIG)


def checkpoints(workdir: str, *, best: bool = False) -> str:
  """The folder of the latest checkpoints, or with best=True of the best one."""
  return paths.join(workdir, BEST, CHECKPOINTS) if best else paths.join(workdir, CHECKPOINTS)


def best_info(workdir: str) -> str:
  return paths.join(workdir, BEST, BEST_INFO)


def rollbacks(workdir: str) -> str:
  return paths.join(workdir, ROLLBACKS)


def xla_cache(workdir: str) -> str:
  return paths.join(workdir, XLA_CACHE)
