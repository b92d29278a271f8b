"""The model family of a config: MuseGAN (jaxgan/gan) or voices (voicegan.py, model.arch="voices").

`make_model` gives what sampling needs (no optimizers); `make_engine` what training needs.
"""

from __future__ import annotations

from jax.sharding import Mesh

from jaxgan import voicegan
from jaxgan.gan import Engine, GanModel

Model = GanModel | voicegan.VoiceModel
TrainEngine = Engine | voicegan.VoiceEngine


def make_model(config, mesh: Mesh) -> Model:
  """The generator (and critic) of a config, without optimizers or train state."""
  if voicegan.is_voice_model(config):
    return voicegan.VoiceModel(config, mesh)
  return GanModel(config, mesh)


def make_engine(config, mesh: Mesh) -> TrainEngine:
  """The model of a config with its optimizers, state and jitted init and step."""
  if voicegan.is_voice_model(config):
    return voicegan.VoiceEngine(config, mesh)
  return Engine(config, mesh)
