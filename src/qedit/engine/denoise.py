"""Stage 5: the denoising loop: flow-matching Euler steps with true CFG and its norm rescale.

The reference tokens (the VAE latents of the input images) ride along after the noise tokens in
every transformer call; only the noise part of the prediction is kept. With a mask, the latents
outside it are pulled back to the reference image re-noised to the next step's level after every
step (diffusers' QwenImageEditInpaintPipeline), so the model only repaints inside the mask.

The loop runs a batch of rows: one row per output, of one edit or of several compatible edits
(request batching, ``qedit.models.batching``). Rows share the schedule and the image shapes; each
has its own noise, references, text and mask, and belongs to a group (an edit) with its own
progress callback and cancel token: a cancelled group's rows leave the batch and the rest run on.
Texts of different lengths are padded, with ``encoder_hidden_states_mask`` telling the transformer
which tokens are real; a batch of one row with no padding calls the transformer exactly as the
reference does (no mask), which is what the bit-exact parity tests hold it to.

Batched CFG (``batch_cfg``) puts both branches in one call: rows [cond..., uncond...]. It saves a
launch of every layer per step (a win on GPUs, where small batches leave the device idle); on a
CPU the work is the same and only the padding's mask is added, so ``EngineOptions.cfg_batch="auto"``
turns it on for CUDA only. The outputs differ from the two-call path by float rounding only.

Each transformer call runs inside ``transformer.cache_context(...)``: "cond"/"uncond" as in the
reference, "cfg" for the batched call. diffusers' own cache hooks (FirstBlockCache) keep their
state per context name; cache-dit (``qedit.engine.speed``) ignores the names and tells the
branches apart by call order, so the conditional branch is always called first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from qedit.engine.encode import TextEmbedding
from qedit.errors import EditCancelled
from qedit.models.protocol import CancelToken, StepCallback

Branch = Literal["cond", "uncond", "cfg"]  # cache-context names: the reference's two CFG passes, or both in one


@dataclass(frozen=True)
class LatentMask:
    """Packed (1, N, 64) mask (1 = may change) and the packed latents of the image to keep."""

    mask: torch.Tensor
    image_latents: torch.Tensor


@dataclass(frozen=True)
class Row:
    """One output's own inputs to the loop."""

    latents: torch.Tensor  # (1, N, 64) packed start latents (pure noise, or re-noised image for strength < 1)
    noise: torch.Tensor  # (1, N, 64) the noise drawn for this output (re-noises the kept region)
    references: torch.Tensor  # (1, M, 64) packed reference latents, all images concatenated
    positive: TextEmbedding
    negative: TextEmbedding | None  # None: true CFG off
    mask: LatentMask | None = None
    group: int = 0  # the edit this row belongs to (``Group``)


@dataclass(frozen=True)
class Group:
    """One edit's progress callback and cancel token, shared by its rows."""

    on_step: StepCallback | None = None
    cancel: CancelToken | None = None


@dataclass(frozen=True)
class Schedule:
    """What every row of a batch shares."""

    img_shapes: list[tuple[int, int, int]]  # (1, h/16, w/16): the noise first, then each reference
    timesteps: torch.Tensor  # this edit's part of the schedule (0-1000 scale)
    cfg: float
    batch_cfg: bool = False


@dataclass
class PassCount:
    """Transformer work of one loop: calls made, and passes (a row through one CFG branch)."""

    calls: int = 0
    passes: dict[int, int] = field(default_factory=dict)  # group -> passes of its rows

    def add(self, groups: list[int], branches: int) -> None:
        for g in groups:
            self.passes[g] = self.passes.get(g, 0) + branches


def pad_texts(texts: list[TextEmbedding]) -> TextEmbedding:
    """Texts stacked into one batch; shorter ones zero-padded, with a mask only where padding exists."""
    longest = max(t.embeds.shape[1] for t in texts)
    if all(t.embeds.shape[1] == longest and t.mask is None for t in texts):
        return TextEmbedding(embeds=torch.cat([t.embeds for t in texts]), mask=None)
    embeds, masks = [], []
    for t in texts:
        n = t.embeds.shape[1]
        embeds.append(F.pad(t.embeds, (0, 0, 0, longest - n)))
        own = t.mask if t.mask is not None else torch.ones(1, n, dtype=torch.bool, device=t.embeds.device)
        masks.append(F.pad(own.bool(), (0, longest - n), value=False))
    return TextEmbedding(embeds=torch.cat(embeds), mask=torch.cat(masks))


def predict(
    transformer, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, img_shapes, n_tokens: int, branch: Branch
) -> torch.Tensor:
    """One transformer call in ``branch``'s cache context: (B, N + M, 64) -> the noise part (B, N, 64)."""
    with transformer.cache_context(branch):
        pred = transformer(
            hidden_states=x,
            timestep=t / 1000,
            encoder_hidden_states=text.embeds,
            encoder_hidden_states_mask=text.mask,
            img_shapes=[img_shapes] * x.shape[0],
            guidance=None,
            attention_kwargs={},
            return_dict=False,
        )[0]
    return pred[:, :n_tokens]


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """True CFG, then each token's vector rescaled to the conditional prediction's norm."""
    comb = uncond + scale * (cond - uncond)
    return comb * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))


class _Batch:
    """The rows still running, stacked; rebuilt only when a group leaves."""

    def __init__(self, rows: list[Row], live: list[int], latents: torch.Tensor | None) -> None:
        self.live = live
        picked = [rows[r] for r in live]
        self.latents = torch.cat([r.latents for r in picked]) if latents is None else latents
        self.references = torch.cat([r.references for r in picked])
        self.noise = torch.cat([r.noise for r in picked])
        self.cfg = picked[0].negative is not None
        self.positive = pad_texts([r.positive for r in picked])
        self.negative = pad_texts([r.negative for r in picked]) if self.cfg else None  # type: ignore[misc]
        self.both = pad_texts([r.positive for r in picked] + [r.negative for r in picked]) if self.cfg else None  # type: ignore[operator]
        self.has_mask = picked[0].mask is not None
        if self.has_mask:
            self.mask = torch.cat([r.mask.mask for r in picked])  # type: ignore[union-attr]
            self.kept = torch.cat([r.mask.image_latents for r in picked])  # type: ignore[union-attr]

    def groups(self, rows: list[Row]) -> list[int]:
        return [rows[r].group for r in self.live]


@torch.inference_mode()
def denoise(
    transformer,
    scheduler,
    schedule: Schedule,
    rows: list[Row],
    groups: list[Group],
    count: PassCount | None = None,
) -> list[torch.Tensor | EditCancelled]:
    """Run the steps; per row, its final packed latents (1, N, 64) or the cancellation that ended it."""
    if len({r.negative is None for r in rows}) > 1 or len({r.mask is None for r in rows}) > 1:
        raise ValueError("rows of one batch must all use CFG or none, and all have a mask or none")
    count = count if count is not None else PassCount()
    results: list[torch.Tensor | EditCancelled | None] = [None] * len(rows)
    total = len(schedule.timesteps)
    n_tokens = rows[0].latents.shape[1]
    batch = _Batch(rows, list(range(len(rows))), None)
    start = time.perf_counter()
    for i, t in enumerate(schedule.timesteps):
        gone = {g for g, grp in enumerate(groups) if grp.cancel is not None and grp.cancel.cancelled}
        if any(rows[r].group in gone for r in batch.live):
            keep = [k for k, r in enumerate(batch.live) if rows[r].group not in gone]
            for r in batch.live:
                if rows[r].group in gone:
                    results[r] = EditCancelled(f"cancelled before step {i + 1}/{total}")
            if not keep:
                break
            batch = _Batch(rows, [batch.live[k] for k in keep], batch.latents[keep])
        latents = batch.latents
        pred = _predict_guided(transformer, batch, latents, t, schedule, n_tokens)
        count.calls += 1 if schedule.batch_cfg or not batch.cfg else 2
        count.add(batch.groups(rows), 2 if batch.cfg else 1)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if batch.has_mask:
            latents = _keep_outside(scheduler, latents, batch, schedule.timesteps, i)
        batch.latents = latents
        elapsed = time.perf_counter() - start
        for g in dict.fromkeys(batch.groups(rows)):
            if groups[g].on_step is not None:
                groups[g].on_step(i + 1, total, elapsed)  # type: ignore[misc]
    else:
        for k, r in enumerate(batch.live):
            results[r] = batch.latents[k : k + 1]
    return [r if r is not None else EditCancelled("cancelled") for r in results]


def _predict_guided(transformer, batch: _Batch, latents, t, schedule: Schedule, n_tokens: int) -> torch.Tensor:
    x = torch.cat([latents, batch.references], dim=1)  # (B, N + M, 64)
    timestep = t.expand(latents.shape[0]).to(latents.dtype)
    shapes = schedule.img_shapes
    if not batch.cfg:
        return predict(transformer, x, timestep, batch.positive, shapes, n_tokens, "cond")
    if schedule.batch_cfg:
        both = predict(
            transformer, torch.cat([x, x]), torch.cat([timestep, timestep]), batch.both, shapes, n_tokens, "cfg"
        )  # type: ignore[arg-type]
        cond, uncond = both.chunk(2)
    else:
        cond = predict(transformer, x, timestep, batch.positive, shapes, n_tokens, "cond")
        uncond = predict(transformer, x, timestep, batch.negative, shapes, n_tokens, "uncond")  # type: ignore[arg-type]
    return guided(cond, uncond, schedule.cfg)


def _keep_outside(scheduler, latents: torch.Tensor, batch: _Batch, timesteps: torch.Tensor, i: int) -> torch.Tensor:
    """Outside the mask, the reference image at the noise level the next step expects."""
    kept = batch.kept
    if i < len(timesteps) - 1:
        kept = scheduler.scale_noise(kept, torch.tensor([timesteps[i + 1]]), batch.noise)
    m = batch.mask
    return (1 - m) * kept + m * latents
