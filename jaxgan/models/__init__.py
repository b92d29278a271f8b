"""MuseGAN-family models: presets, the (generator, discriminator) factory and building blocks."""

from jaxgan.models.binary import BINARIZE_MODES, activate, binarize_output
from jaxgan.models.conditional import (
  ConditionalGenerator,
  empty_condition,
  training_condition,
)
from jaxgan.models.musegan import (
  HybridDiscriminator,
  HybridGenerator,
  TutorialDiscriminator,
  TutorialGenerator,
)
from jaxgan.models.presets import (
  PRESET_SHAPES,
  PRESETS,
  build,
  check_compatible,
  count_params,
  init_shapes,
  latent_size,
  model_config,
)

__all__ = [
  "BINARIZE_MODES",
  "ConditionalGenerator",
  "HybridDiscriminator",
  "HybridGenerator",
  "PRESETS",
  "PRESET_SHAPES",
  "TutorialDiscriminator",
  "TutorialGenerator",
  "activate",
  "binarize_output",
  "build",
  "check_compatible",
  "count_params",
  "empty_condition",
  "init_shapes",
  "latent_size",
  "model_config",
  "training_condition",
]
