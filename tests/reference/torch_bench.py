#!/usr/bin/env python3
"""PyTorch reference for `pretext bench pipelines/bench.toml`.

Builds the same encoders, projector, SimCLR loss, optimiser and shapes as the three pretrain
stages of pipelines/bench.toml and times full training steps (forward of both views as one
batch, NT-Xent loss, backward, AdamW update), so the two can be run side by side on one machine:

    ./target/release/pretext bench pipelines/bench.toml --json pretext.json
    python3 tests/reference/torch_bench.py --json torch.json            # eager
    python3 tests/reference/torch_bench.py --compile --json compiled.json

The models follow runner/engine/src/nn/: Linear layers with bias, batch norm (eps 1e-5,
momentum 0.1) over all rows of both views, ReLU; residual blocks conv-BN-ReLU-conv-BN + shortcut
(1x1 conv + BN when the shape changes); pre-norm transformer blocks (LayerNorm eps 1e-6, a fused
qkv projection and an output projection, MLP 2x wide with tanh-GELU), a CLS token without a
position embedding, a final LayerNorm. Their state-dict names are the ones `init = { path,
names = "torch" }` reads (runner/engine/src/nn/torch_names.rs; export_torch_init.py writes a
state dict of them). The projector is Linear-BN-ReLU-Linear. Inputs are random images
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
    """784-1024-512-256: Linear-BN-ReLU between layers (Linear-ReLU without batch norm), a plain
    last layer. State-dict names `net.{i}`: pretext's `encoder.{i}` is `net.{3i}` (`.bn`:
    `net.{3i+1}`), or `net.{2i}` without batch norm."""

    def __init__(self, widths, batch_norm=True):
        super().__init__()
        layers = []
        for i in range(len(widths) - 2):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if batch_norm:
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(widths[-2], widths[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


def norm2d(channels, batch_norm):
    # Identity has no parameters, so the state dict has no `bn` entries without batch norm.
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (a strided 1x1 conv + BN when the shape changes),
    then ReLU; torchvision's names (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0/.1`), with
    conv biases as pretext has them."""

    def __init__(self, cin, cout, stride, batch_norm=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = norm2d(cout, batch_norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.bn2 = norm2d(cout, batch_norm)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), norm2d(cout, batch_norm))

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(h + sc)


class ResNet(nn.Module):
    """A stem conv (`conv1`, `bn1`), three stages of `blocks` residual blocks (`layer1..3`,
    widths w, 2w, 4w; stride 2 at the start of stages 2 and 3), global average pooling, a
    linear head (`fc`): pretext's ResNet under torchvision's names."""

    def __init__(self, channels, width, blocks, embed, batch_norm=True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1)
        self.bn1 = norm2d(width, batch_norm)
        cin = width
        for stage in range(3):
            cout = width << stage
            layer = []
            for b in range(blocks):
                layer.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1, batch_norm))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, embed)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(h.mean(dim=(2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused `qkv` projection (q, k, v stacked in that order,
    each head a contiguous slice) and an output projection `proj`, as timm names them."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1) @ v
        return self.proj(att.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = FeedForward(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, channels, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Vit(nn.Module):
    """pretext's ViT under timm's names: `patch_embed.proj` (a conv with kernel = stride =
    patch), `pos_embed` `[1, T, dim]` for the patch tokens only (the CLS token gets no position
    embedding, timm's `no_embed_class`), `cls_token`, `blocks.{i}`, a final `norm` and a `head`;
    CLS or mean pooling."""

    def __init__(self, channels, size, patch, dim, depth, heads, embed, cls=True):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch_embed = PatchEmbed(channels, patch, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls else None
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, embed)

    def forward(self, x):
        h = self.patch_embed(x) + self.pos_embed
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), h], dim=1)
        h = self.norm(self.blocks(h))
        return self.head(h[:, 0] if self.cls_token is not None else h.mean(dim=1))


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
