"""Train the echo-lv reference model on synthetic A4C cines and export it to ONNX.

    .venv/bin/pip install torch==2.13.0   # the `models` extra; not needed to run the model
    .venv/bin/python models/echo_lv/build_model.py [--seconds 300]

A small U-Net (about 40 k parameters) trained on cines from `radpath.synth.echo.make_echo`
(training seeds 1000-1015) against their known LV cavity masks; the held-out evaluation
seeds (2001-2006, models/echo_lv/evaluate.py) are never seen. Input preparation is
`integrations.inference.echo_lv.to_model_input`, the same function inference uses.
Training is capped by wall time (2 CPU cores); the seed fixes initialisation and batches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from integrations.inference.echo_lv import model_grid, to_model_input
from radpath.synth.echo import make_echo

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "echo_lv.onnx"
TRAIN_SEEDS = tuple(range(1000, 1016))
VERSION = "1.0.0"


def _block(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class EchoLvNet(nn.Module):
    """Encoder to 1/4 resolution with dilated context, decoder with skips; one logit per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = _block(1, 8)
        self.e2 = nn.Sequential(_block(8, 16, stride=2), _block(16, 16))
        self.e3 = nn.Sequential(_block(16, 32, stride=2), _block(32, 32, 2), _block(32, 32, 4), _block(32, 32, 8))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.d2 = _block(32 + 16, 16)
        self.d1 = _block(16 + 8, 8)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x1 = self.e1(image)
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        y2 = self.d2(torch.cat([self.up(x3), x2], 1))
        y1 = self.d1(torch.cat([self.up(y2), x1], 1))
        return self.head(y1)


class Exported(nn.Module):
    def __init__(self, net: EchoLvNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def training_data(seeds=TRAIN_SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """Model-grid images and masks (same resampling as inference) for the given seeds."""
    images, masks = [], []
    for seed in seeds:
        ph = make_echo(seed)
        grid = model_grid(ph.region, ph.cm_per_pixel)
        images.append(to_model_input(ph.frames, grid))
        masks.append(to_model_input(ph.lv_masks.astype(np.uint8) * 255, grid) >= 0.5)
    return np.concatenate(images), np.concatenate(masks).astype(np.float32)


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gain, gamma and noise changes, so real machines' grey levels are not a surprise."""
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (x.shape[0], 1, 1, 1)).astype(np.float32))
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, (x.shape[0], 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0, 0.03, x.shape).astype(np.float32))
    return torch.clamp((x.clamp(min=0) ** gamma) * gain + noise * (x > 0), 0, 1)


def train(seconds: float, seed: int = 7) -> EchoLvNet:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    images, masks = training_data()
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(masks)
    net = EchoLvNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    bce = nn.BCEWithLogitsLoss()
    start, step = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        idx = torch.from_numpy(rng.choice(len(x_all), 12, replace=False))
        shift = int(rng.integers(-6, 7))  # small lateral shifts of the view
        x = torch.roll(_augment(x_all[idx], rng), shift, dims=3)
        y = torch.roll(y_all[idx], shift, dims=3)
        logits = net(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = bce(logits, y) + dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)", flush=True)
    print(f"{step} steps in {time.monotonic() - start:.0f} s")
    return net.eval()


def export(net: EchoLvNet, path: Path = ONNX_PATH) -> None:
    dummy = torch.zeros(1, 1, 96, 128)
    torch.onnx.export(
        Exported(net), dummy, str(path), input_names=["image"], output_names=["lv_probability"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "lv_probability": {0: "n", 2: "h", 3: "w"}},
        opset_version=17, dynamo=False,
    )
    model = onnx.load(str(path))
    for key, value in {
        "name": "echo-lv",
        "version": VERSION,
        "intended_use": "Research/demo: LV cavity segmentation on apical 4-chamber echo cines. Not a medical device.",
        "training": f"synthetic A4C cines, radpath.synth.echo seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall-time budget")
    args = parser.parse_args()
    export(train(args.seconds))
    print(f"wrote {ONNX_PATH}")


if __name__ == "__main__":
    main()
