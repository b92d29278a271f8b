"""A PyTorch twin of the ISMIR 2019 MuseGAN tutorial, kept only as a speed reference.

Same layers, parameter counts (G 313,951, D 204,321), data layout `[B, tracks, bars * steps,
pitches]` with real samples in {0, 1}, optimizers and training step as the tutorial notebook;
written independently for the benchmark in `bench_vs_torch.py`. PyTorch is an optional
benchmark dependency of jaxgan (the `bench` extra), never a runtime one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

N_TRACKS = 5
N_BARS = 4
STEPS_PER_BAR = 16
N_PITCHES = 72
LATENT = 128
BATCH = 16
G_PARAMS = 313_951
D_PARAMS = 204_321


class GBlock(nn.Module):
  """ConvTranspose3d + BatchNorm3d + ReLU (the tutorial's last block has them too)."""

  def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int],
               stride: tuple[int, int, int]):
    super().__init__()
    self.conv = nn.ConvTranspose3d(c_in, c_out, kernel, stride)
    self.norm = nn.BatchNorm3d(c_out)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.norm(self.conv(x)))


class SampleLayerNorm(nn.Module):
  """The tutorial's layer norm: per-example mean and (unbiased) std over all non-batch axes,
  eps added to the std, then a per-channel affine with gamma ~ U(0, 1)."""

  def __init__(self, channels: int, eps: float = 1e-5):
    super().__init__()
    self.eps = eps
    self.gamma = nn.Parameter(torch.empty(channels).uniform_())
    self.beta = nn.Parameter(torch.zeros(channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    stat_shape = (-1,) + (1,) * (x.dim() - 1)
    mean = flat.mean(1).view(stat_shape)
    std = flat.std(1).view(stat_shape)
    y = (x - mean) / (std + self.eps)
    affine_shape = (1, -1) + (1,) * (x.dim() - 2)
    return self.gamma.view(affine_shape) * y + self.beta.view(affine_shape)


class DBlock(nn.Module):
  """Conv3d + sample layer norm + LeakyReLU (slope 0.01, PyTorch's default as in the tutorial)."""

  def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int],
               stride: tuple[int, int, int]):
    super().__init__()
    self.conv = nn.Conv3d(c_in, c_out, kernel, stride)
    self.norm = SampleLayerNorm(c_out)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(self.norm(self.conv(x)))


class Generator(nn.Module):
  """z [B, 128] -> [B, 5, 64, 72]: shared blocks over (bars, steps, pitches), then per track."""

  def __init__(self):
    super().__init__()
    self.shared = nn.Sequential(
        GBlock(LATENT, 256, (4, 1, 1), (4, 1, 1)),   # bars 1 -> 4
        GBlock(256, 128, (1, 4, 1), (1, 4, 1)),      # steps 1 -> 4
        GBlock(128, 64, (1, 1, 4), (1, 1, 4)),       # pitches 1 -> 4
        GBlock(64, 32, (1, 1, 3), (1, 1, 1)),        # pitches 4 -> 6
    )
    self.track_steps = nn.ModuleList(
        [GBlock(32, 16, (1, 4, 1), (1, 4, 1)) for _ in range(N_TRACKS)])      # steps 4 -> 16
    self.track_pitches = nn.ModuleList(
        [GBlock(16, 1, (1, 1, 12), (1, 1, 12)) for _ in range(N_TRACKS)])     # pitches 6 -> 72

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = self.shared(z.view(-1, LATENT, 1, 1, 1))
    x = torch.cat([p(s(x)) for s, p in zip(self.track_steps, self.track_pitches)], 1)
    return x.view(-1, N_TRACKS, N_BARS * STEPS_PER_BAR, N_PITCHES)


class Discriminator(nn.Module):
  """[B, 5, 64, 72] -> logits [B, 1]: per-track blocks, then shared ones down to one vector."""

  def __init__(self):
    super().__init__()
    self.track_pitches = nn.ModuleList(
        [DBlock(1, 16, (1, 1, 12), (1, 1, 12)) for _ in range(N_TRACKS)])     # pitches 72 -> 6
    self.track_steps = nn.ModuleList(
        [DBlock(16, 16, (1, 4, 1), (1, 4, 1)) for _ in range(N_TRACKS)])      # steps 16 -> 4
    self.shared = nn.Sequential(
        DBlock(16 * N_TRACKS, 64, (1, 1, 3), (1, 1, 1)),  # pitches 6 -> 4
        DBlock(64, 64, (1, 1, 4), (1, 1, 4)),             # pitches 4 -> 1
        DBlock(64, 128, (1, 4, 1), (1, 4, 1)),            # steps 4 -> 1
        DBlock(128, 128, (2, 1, 1), (1, 1, 1)),           # bars 4 -> 3
        DBlock(128, 256, (3, 1, 1), (3, 1, 1)),           # bars 3 -> 1
    )
    self.dense = nn.Linear(256, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x.view(-1, N_TRACKS, N_BARS, STEPS_PER_BAR, N_PITCHES)
    x = torch.cat([s(p(x[:, i:i + 1])) for i, (p, s)
                   in enumerate(zip(self.track_pitches, self.track_steps))], 1)
    return self.dense(self.shared(x).view(-1, 256))


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


def gradient_penalty(d: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
  """WGAN-GP on random interpolates; create_graph=True makes its backward a double backward."""
  alpha = torch.rand(real.shape[0], 1, 1, 1)
  x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
  out = d(x)
  (grad,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
  return ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


class Trainer:
  """The tutorial's `train_one_step`: one D update (real, fake and 10 x GP backward passes
  accumulated) then one G update that reuses the same fake batch, Adam 1e-3, betas (0.5, 0.9).

  `g_fn`, `d_fn` and `gp_d_fn` default to the modules themselves; the benchmark passes
  torch.compile'd wrappers (which share the modules' parameters) to time the compiled variant.
  """

  def __init__(self, seed: int = 0, g_fn=None, d_fn=None, gp_d_fn=None):
    torch.manual_seed(seed)
    self.generator = Generator()
    self.discriminator = Discriminator()
    self.g_fn = g_fn or self.generator
    self.d_fn = d_fn or self.discriminator
    self.gp_d_fn = gp_d_fn or self.d_fn
    self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    self.generator.train()
    self.discriminator.train()

  def step(self, real: torch.Tensor) -> tuple[float, float]:
    latent = torch.randn(real.shape[0], LATENT)

    self.d_opt.zero_grad()
    d_real = -self.d_fn(real).mean()
    d_real.backward()
    fake = self.g_fn(latent)
    d_fake = self.d_fn(fake.detach()).mean()
    d_fake.backward()
    gp = 10.0 * gradient_penalty(self.gp_d_fn, real, fake.detach())
    gp.backward()
    self.d_opt.step()

    self.g_opt.zero_grad()
    g_loss = -self.d_fn(fake).mean()
    g_loss.backward()
    self.g_opt.step()
    # Python floats, as the tutorial logs them every step.
    return (d_real + d_fake).item(), g_loss.item()
