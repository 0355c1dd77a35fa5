"""The training loop: a TransformerNet learns one style from a folder of photos.

Defaults are the Johnson et al. (2016) recipe as pytorch/examples ``fast_neural_style``
runs it: 256x256 crops, VGG16 loss network (style at relu1_2, relu2_2, relu3_3, relu4_3;
content at relu2_2), content weight 1e5, style weight 1e10, Adam at 1e-3, batch 4,
2 epochs. Under ``torchrun`` every rank runs this same function on its shard of the data
(``DistributedSampler``) and DDP averages the gradients; ``--batch-size`` is per rank.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from core import codec
from lossnet import FP32, VGG, LossNetwork, load_vgg
from lossnet import Precision as LossPrecision
from networks import SizePreserving, TransformerNet
from train import checkpoint, distributed
from train.dataset import ContentImages, load_style_image, read_image, to_tensor
from train.distributed import Precision, Runtime
from train.losses import PerceptualLoss

log = logging.getLogger("train")

#: Settings a resumed run must share with the checkpoint (the rest -- step limits,
#: intervals, workers -- may change between runs).
RECIPE = ("style_image", "image_size", "augment", "style_size", "loss_network", "content_layers", "style_layers",
          "content_weight", "style_weight", "tv_weight", "learning_rate", "batch_size", "seed")


@dataclass
class TrainSettings:
    """One training run. Field defaults are the Johnson et al. recipe."""

    dataset: Path
    style_image: Path
    save_dir: Path
    name: str | None = None  # weights file stem; default: the style image's stem
    epochs: int = 2
    max_steps: int | None = None  # overrides epochs: total optimizer steps
    batch_size: int = 4  # per rank
    image_size: int = 256
    augment: bool = False  # random crops and flips: variety from a small folder of photos
    style_size: int | None = None  # shorter side of the style image; None keeps it as is
    loss_network: str = "vgg16"
    loss_weights: Path | None = None  # ImageNet VGG file (lossnet layouts); default $STYLE_VGG16_WEIGHTS / torch cache
    content_layers: tuple[str, ...] = ("relu2_2",)
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    learning_rate: float = 1e-3
    seed: int = 42
    precision: str = "auto"  # auto | fp32 | bf16 (optimize.precision's choice on CPU; bf16/fp16 on GPU)
    device: str | None = None  # default: cuda:LOCAL_RANK if available, else cpu
    workers: int = 4
    resume: bool = False  # continue from save_dir/checkpoint.pt if it exists
    log_interval: int = 50
    sample_interval: int = 1000
    checkpoint_interval: int = 2000
    sample_image: Path | None = None  # default: a real photo shipped with matplotlib
    sample_size: int = 512
    rank_digests: bool = False  # each rank writes rank<r>.sha256 of its final weights

    def __post_init__(self):
        self.name = self.name or Path(self.style_image).stem
        self.content_layers = tuple(self.content_layers)
        self.style_layers = tuple(self.style_layers)

    def to_json(self) -> dict:
        """Plain values only (paths as strings), so checkpoints load with ``weights_only``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.save_dir) / "checkpoint.pt"

    @property
    def weights_path(self) -> Path:
        return Path(self.save_dir) / f"{self.name}.pth"


@dataclass
class Result:
    step: int
    weights: Path
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)  # this rank's losses, one per step run


def load_loss_network(settings: TrainSettings) -> VGG:
    """The frozen VGG the losses are measured with: verified ImageNet weights (``lossnet``)."""
    vgg = load_vgg(settings.loss_network, settings.loss_weights)
    log.info("loss network %s from %s", vgg.label, vgg.source)
    return vgg


def build_loss(settings: TrainSettings, device: torch.device, vgg: VGG | None = None,
               precision: LossPrecision = FP32) -> PerceptualLoss:
    """Frozen VGG taps plus the style image's Gram targets, computed once."""
    vgg = vgg or load_loss_network(settings)
    taps = LossNetwork(vgg, settings.content_layers + settings.style_layers, precision)
    style = load_style_image(settings.style_image, settings.style_size)
    loss = PerceptualLoss(taps, style, settings.content_layers, settings.style_layers,
                          settings.content_weight, settings.style_weight, settings.tv_weight)
    return loss.to(device)


def epoch_loader(dataset: ContentImages, sampler: DistributedSampler, epoch: int, skip: int,
                 settings: TrainSettings, runtime: Runtime) -> DataLoader:
    """This rank's batches for ``epoch``, minus the first ``skip`` already trained on.

    The order depends only on the seed and the epoch, so a resumed run sees exactly the
    batches the interrupted one had not reached yet, without decoding the skipped ones."""
    sampler.set_epoch(epoch)
    order = list(sampler)[skip * settings.batch_size:]
    return DataLoader(dataset, batch_size=settings.batch_size, sampler=order, drop_last=True,
                      num_workers=settings.workers, pin_memory=runtime.device.type == "cuda")


class SampleWriter:
    """Rank 0 stylizes one fixed photo now and then, to watch the style emerge."""

    def __init__(self, settings: TrainSettings, device: torch.device):
        if settings.sample_image is None:  # imported here: it brings in ONNX, which training never needs
            from core.photos import default_parity_photo
        photo = settings.sample_image or default_parity_photo()
        self.photo = to_tensor(read_image(photo, max_side=settings.sample_size))[None].to(device)
        self.folder = Path(settings.save_dir) / "samples"
        self.folder.mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def __call__(self, net: TransformerNet, step: int) -> Path:
        net.eval()
        image = SizePreserving(net)(self.photo)[0].float().cpu().numpy()
        net.train()
        path = self.folder / f"step_{step:07d}.jpg"
        path.write_bytes(codec.encode(codec.from_array(image), "jpeg"))
        return path


def train(settings: TrainSettings, loss_network: VGG | None = None) -> Result:
    """Runs (or resumes) training to the requested step; returns where the weights are.

    ``loss_network``: measure the losses with this VGG instead of loading
    ``settings.loss_network``'s weights (the tests pass one with random weights); it must be
    that architecture, which the checkpoint records."""
    if loss_network is not None and loss_network.arch.name != settings.loss_network:
        raise ValueError(f"loss_network is {loss_network.arch.name}, but the settings ask for {settings.loss_network}")
    runtime = distributed.setup(settings.device)
    try:
        return _train(settings, runtime, loss_network)
    finally:
        distributed.teardown()


def _train(settings: TrainSettings, runtime: Runtime, loss_network: VGG | None) -> Result:
    torch.manual_seed(settings.seed)
    save_dir = Path(settings.save_dir)
    dataset = ContentImages(settings.dataset, settings.image_size, settings.augment)
    # One sampler for 1..N processes: shuffled by (seed, epoch), split across ranks, and
    # equal-length shards (drop_last) so every rank runs the same number of steps.
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=settings.seed, drop_last=True)
    steps_per_epoch = len(sampler) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} images cannot fill one batch of {settings.batch_size} "
                         f"on each of {runtime.world_size} rank(s)")
    total_steps = settings.max_steps or settings.epochs * steps_per_epoch

    net = TransformerNet().to(runtime.device)
    vgg = loss_network or load_loss_network(settings)
    if loss_network is not None:
        log.info("loss network %s (given by the caller)", vgg.source)
    precision = Precision.choose(runtime.device, settings.precision, vgg)
    loss_fn = build_loss(settings, runtime.device, vgg, precision.lossnet_precision)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    step = _resume(settings, runtime, net, optimizer, precision) if settings.resume else 0
    model = DistributedDataParallel(net, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
                                    else None) if runtime.distributed else net

    if runtime.is_main:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "settings.json").write_text(json.dumps(settings.to_json(), indent=1))
        log.info("%d images, %d rank(s) on %s, %s, %d steps/epoch, steps %d -> %d",
                 len(dataset), runtime.world_size, runtime.device, precision.describe(),
                 steps_per_epoch, step, total_steps)
    samples = SampleWriter(settings, runtime.device) if runtime.is_main and settings.sample_interval else None
    progress = tqdm(total=total_steps, initial=step, disable=not runtime.is_main, unit="step", dynamic_ncols=True)
    history: list[dict[str, float]] = []
    started, started_step = time.perf_counter(), step

    net.train()
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        for content in epoch_loader(dataset, sampler, epoch, skip, settings, runtime):
            content = content.to(runtime.device, non_blocking=True)
            with precision.autocast():
                terms = loss_fn(model(content), content)
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(terms["total"]).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
            step += 1

            losses = {name: float(value.detach()) for name, value in terms.items()}
            history.append(losses)
            if step % settings.log_interval == 0 or step == total_steps:
                averaged = distributed.mean_over_ranks(losses, runtime)  # every rank joins
                if runtime.is_main:
                    rate = (step - started_step) * settings.batch_size * runtime.world_size
                    rate /= time.perf_counter() - started
                    _log_step(save_dir, progress, step, epoch, averaged, rate)
            progress.update(1)
            if samples and (step % settings.sample_interval == 0 or step == total_steps):
                samples(net, step)
            if step % settings.checkpoint_interval == 0 and step != total_steps:
                _save(settings, runtime, step, net, optimizer, precision)
            if step >= total_steps:
                break
    progress.close()
    _save(settings, runtime, step, net, optimizer, precision)
    if settings.rank_digests:
        (save_dir / f"rank{runtime.rank}.sha256").write_text(checkpoint.digest(net.state_dict()) + "\n")
    distributed.barrier(runtime)
    return Result(step, settings.weights_path, settings.checkpoint_path, history)


def _resume(settings: TrainSettings, runtime: Runtime, net: TransformerNet, optimizer: torch.optim.Optimizer,
            precision: Precision) -> int:
    """Restores model, optimizer and loss scaler; returns the step to continue from (0: fresh)."""
    if not settings.checkpoint_path.exists():
        if runtime.is_main:
            log.info("no %s yet: starting from step 0", settings.checkpoint_path)
        return 0
    state = checkpoint.load(settings.checkpoint_path)
    mine, theirs = settings.to_json(), state["settings"]
    changed = [key for key in RECIPE if mine[key] != theirs.get(key)]
    if changed:
        raise ValueError(f"cannot resume {settings.checkpoint_path}: {', '.join(changed)} differ from the "
                         "checkpoint's settings; use another --save-dir for a new run")
    if state["world_size"] != runtime.world_size and runtime.is_main:
        log.warning("checkpoint was written by %d rank(s), resuming on %d: the data order after resuming "
                    "differs from an uninterrupted run", state["world_size"], runtime.world_size)
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    precision.scaler.load_state_dict(state["scaler"])
    if runtime.is_main:
        log.info("resumed from %s at step %d", settings.checkpoint_path, state["step"])
    return int(state["step"])


def _save(settings: TrainSettings, runtime: Runtime, step: int, net: TransformerNet,
          optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    if runtime.is_main:
        checkpoint.save(settings.checkpoint_path, settings.weights_path, step=step, model=net,
                        optimizer=optimizer, scaler=precision.scaler, settings=settings.to_json(),
                        world_size=runtime.world_size)


def _log_step(save_dir: Path, progress: tqdm, step: int, epoch: int, losses: dict[str, float],
              images_per_second: float) -> None:
    progress.set_postfix({name: f"{value:.3g}" for name, value in losses.items()}, refresh=False)
    record = {"step": step, "epoch": epoch, **losses, "images_per_second": round(images_per_second, 2)}
    with (save_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    progress.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
