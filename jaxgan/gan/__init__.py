"""The MuseGAN maths: the model pair (model.py), the GAN losses (losses.py, also the voices
model's), the pure train step (step.py), the train state (state.py) and the engine that jits
them for a mesh (engine.py). No files, no loop."""

from jaxgan.gan.engine import Engine
from jaxgan.gan.model import GanModel
from jaxgan.gan.step import Optimizers, train_step

__all__ = ["Engine", "GanModel", "Optimizers", "train_step"]
