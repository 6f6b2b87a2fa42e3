#!/usr/bin/env python3
"""PyTorch reference for `pretext bench pipelines/bench.toml`.

Builds the same encoders, projector, SimCLR loss, optimiser and shapes as the three pretrain
stages of pipelines/bench.toml and times full training steps (forward of both views as one
batch, NT-Xent loss, backward, AdamW update), so the two can be run side by side on one machine:

    ./target/release/pretext bench pipelines/bench.toml --json pretext.json
    python3 tests/reference/torch_bench.py --json torch.json            # eager
    python3 tests/reference/torch_bench.py --compile --json compiled.json

The models follow runner/src/engine/nn.rs: Linear layers with bias, batch norm (eps 1e-5,
momentum 0.1) over all rows of both views, ReLU; residual blocks conv-BN-ReLU-conv-BN + shortcut
(1x1 conv + BN when the shape changes); pre-norm transformer blocks (LayerNorm eps 1e-6,
separate q/k/v/o projections, MLP 2x wide with tanh-GELU), a CLS token without a position
embedding, a final LayerNorm. The projector is Linear-BN-ReLU-Linear. Inputs are random images
of the pipeline's shape (1x28x28): the step time does not depend on the pixel values, and
pretext times view production separately.

Prints one line per encoder and, with --json, the same fields as `pretext bench --json`
(step_ms, step_ms_median, train_images_per_second, ...). Needs torch (and numpy for nothing).
"""

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE = (1, 28, 28)
EMBED = 256
PROJ_HIDDEN, PROJ_DIM, TEMPERATURE = 512, 128, 0.2


class Mlp(nn.Module):
    """784-1024-512-256: Linear-BN-ReLU between layers, a plain last layer."""

    def __init__(self, widths):
        super().__init__()
        layers = []
        for i in range(len(widths) - 2):
            layers += [nn.Linear(widths[i], widths[i + 1]), nn.BatchNorm1d(widths[i + 1]), nn.ReLU()]
        layers.append(nn.Linear(widths[-2], widths[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


def conv_bn(cin, cout, kernel, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=True),
        nn.BatchNorm2d(cout),
    )


class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1)
        self.shortcut = conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.conv2(F.relu(self.conv1(x)))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(h + sc)


class ResNet(nn.Module):
    """A stem conv, three stages of `blocks` residual blocks (widths w, 2w, 4w; stride 2 at
    the start of stages 2 and 3), global average pooling, a linear head."""

    def __init__(self, channels, width, blocks, embed):
        super().__init__()
        self.stem = conv_bn(channels, width, 3, 1)
        layers, cin = [], width
        for stage in range(3):
            cout = width << stage
            for b in range(blocks):
                layers.append(ResBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, embed)

    def forward(self, x):
        h = self.blocks(F.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        a = self.ln1(x)

        def split(y):
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(a)), split(self.k(a)), split(self.v(a))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Vit(nn.Module):
    def __init__(self, channels, size, patch, dim, depth, heads, embed):
        super().__init__()
        self.patch = patch
        tokens = (size // patch) ** 2
        self.embed = nn.Linear(patch * patch * channels, dim)
        self.pos = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, embed)

    def forward(self, x):
        b, c, _, _ = x.shape
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)
        tok = self.embed(patches) + self.pos
        h = torch.cat([self.cls.expand(b, -1, -1), tok], dim=1)
        h = self.norm(self.blocks(h))
        return self.head(h[:, 0])


def projector():
    return nn.Sequential(nn.Linear(EMBED, PROJ_HIDDEN), nn.BatchNorm1d(PROJ_HIDDEN), nn.ReLU(), nn.Linear(PROJ_HIDDEN, PROJ_DIM))


def nt_xent(a, b, temperature):
    """SimCLR's loss over the 2N rows of [a; b] (plugins/contrastive: `nt_xent`)."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1, eps=1e-8)
    sim = z @ z.t() / temperature
    sim = sim - torch.eye(2 * n, device=z.device) * 1e9
    labels = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(sim, labels)


ENCODERS = {
    # name: (constructor, learning rate) as in pipelines/bench.toml
    "mlp": (lambda: Mlp([784, 1024, 512, EMBED]), 2e-3),
    "resnet": (lambda: ResNet(1, 32, 2, EMBED), 2e-3),
    "vit": (lambda: Vit(1, 28, 4, 192, 6, 3, EMBED), 1e-3),
}


def optimizer(model, lr):
    # As pretext: no weight decay on biases and norm parameters.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n and "cls" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in n and "cls" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}], lr=lr, eps=1e-8
    )


def bench(name, batch, steps, warmup, device, compile_model):
    make, lr = ENCODERS[name]
    torch.manual_seed(7)
    encoder, proj = make().to(device), projector().to(device)
    model = nn.Sequential(encoder, proj)
    opt = optimizer(model, lr)
    run = torch.compile(model) if compile_model else model
    x = torch.rand(2 * batch, *IMAGE, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        z = run(x)
        loss = nt_xent(z[:batch], z[batch:], TEMPERATURE)
        loss.backward()
        opt.step()
        return loss

    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) * 1e3
        if not math.isfinite(loss.item()):
            raise SystemExit(f"{name}: the loss is not finite at step {i + 1}")
        if i >= warmup:
            times.append(dt)
    times.sort()
    med = statistics.median(times)

    def q(f):
        return times[round((len(times) - 1) * f)]

    return {
        "stage": name,
        "encoder": name,
        "objective": "simclr",
        "batch": batch,
        "views": 2,
        "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "mode": "torch.compile" if compile_model else "eager",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "step_ms": times,
        "step_ms_median": med,
        "step_ms_p10": q(0.1),
        "step_ms_p90": q(0.9),
        "train_images_per_second": 2 * batch / (med / 1e3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", action="append", choices=sorted(ENCODERS), help="repeatable; default: all")
    ap.add_argument("--batch", type=int, action="append", help="per encoder in --encoder order, or one for all (default 256)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    names = args.encoder or ["mlp", "resnet", "vit"]
    batches = args.batch or [256]
    if len(batches) not in (1, len(names)):
        ap.error("give one --batch, or one per --encoder")
    if len(batches) == 1:
        batches = batches * len(names)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    rows = []
    for name, batch in zip(names, batches):
        r = bench(name, batch, args.steps, args.warmup, device, args.compile)
        rows.append(r)
        print(
            f"{name:<8} batch {batch:>4}  params {r['encoder_parameters']:>9}  "
            f"step ms {r['step_ms_median']:.2f} [{r['step_ms_p10']:.2f}-{r['step_ms_p90']:.2f}]  "
            f"train img/s {r['train_images_per_second']:.0f}  ({r['mode']}, {r['device']}, {platform.processor() or platform.machine()})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
