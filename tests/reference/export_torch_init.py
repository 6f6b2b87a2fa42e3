#!/usr/bin/env python3
"""Writes the PyTorch state-dict fixtures `init = { path, names = "torch" }` is tested with.

For each of pretext's image encoders it builds the matching PyTorch module (from
torch_bench.py: the same architecture under the names runner/engine/src/nn/torch_names.rs
maps), gives every parameter and batch-norm statistic a seeded random value (so a transposed
or misplaced tensor changes the result), and writes into tests/fixtures/init/:

    <name>.safetensors           the state dict (float32; BatchNorm's int64
                                 num_batches_tracked kept, as torch saves it)
    <name>.expected.safetensors  `input` [4, C*H*W] (channel-major images) and `embedding`
                                 [4, embed] — the module's output in eval mode

The runner's tests load each state dict into the pretext encoder the `MODEL` table below
describes, embed `input` and compare with `embedding`; the e2e tests import resnet.safetensors
through a pipeline. Inputs are 1x28x28 (MNIST's shape).

    python3 -m pip install torch safetensors
    python3 tests/reference/export_torch_init.py
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import Mlp, ResNet, Vit  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "init")
IMAGE = (1, 28, 28)


class ConvNet(nn.Module):
    """pretext's ConvNet: three 3x3 conv blocks (`conv1..3`, `bn1..3`; stride 1, 2, 2; widths
    w, 2w, 4w), global average pooling or the flattened last map (NCHW order), a linear head
    `fc`."""

    def __init__(self, channels, width, embed, size, flatten=False, batch_norm=True):
        super().__init__()
        chans = [channels, width, 2 * width, 4 * width]
        for i in range(3):
            setattr(self, f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(chans[i + 1]) if batch_norm else nn.Identity())
        self.flatten = flatten
        side = (((size + 1) // 2) + 1) // 2
        self.fc = nn.Linear(chans[3] * (side * side if flatten else 1), embed)

    def forward(self, x):
        for i in range(1, 4):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return self.fc(x.flatten(1) if self.flatten else x.mean(dim=(2, 3)))


# name: (module, the pretext `model` table of the same architecture)
FIXTURES = {
    "resnet": (
        lambda: ResNet(1, 4, 1, 16),
        '{ arch = "resnet", width = 4, blocks = 1, embed_dim = 16 }',
    ),
    "vit": (
        lambda: Vit(1, 28, 7, 16, 2, 2, 16),
        '{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16 }',
    ),
    "vit_mean": (
        lambda: Vit(1, 28, 7, 16, 1, 4, 8, cls=False),
        '{ arch = "vit", patch = 7, dim = 16, depth = 1, heads = 4, pool = "mean", embed_dim = 8 }',
    ),
    "convnet": (
        lambda: ConvNet(1, 4, 16, 28, flatten=True),
        '{ arch = "convnet", width = 4, pool = "flatten", embed_dim = 16 }',
    ),
    "mlp": (
        lambda: Mlp([784, 16, 16]),
        '{ arch = "mlp", hidden = [16], embed_dim = 16 }',
    ),
}


def randomise(module, gen):
    """Seeded values for every parameter and batch-norm statistic (positive variances)."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_((torch.rand(t.shape, generator=gen) - 0.5) * 0.6)


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, (make, model)) in enumerate(FIXTURES.items()):
        gen = torch.Generator().manual_seed(100 + i)
        module = make()
        randomise(module, gen)
        module.eval()
        x = torch.rand((4, *IMAGE), generator=gen)
        with torch.no_grad():
            emb = module(x)
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        save_file(state, os.path.join(OUT, f"{name}.safetensors"), metadata={"model": model})
        save_file(
            {"input": x.reshape(4, -1).contiguous(), "embedding": emb.contiguous()},
            os.path.join(OUT, f"{name}.expected.safetensors"),
            metadata={"model": model},
        )
        params = sum(v.numel() for v in state.values())
        print(f"{name:<9} {params:>6} values  model = {model}")


if __name__ == "__main__":
    main()
