"""The bench's runs: qedit and the reference interleaved on one image, then (``--batch N``) request
batching against N sequential edits.

Interleaving (qedit, reference, qedit, reference, ...) after an uncounted warm-up of each side
spreads whatever else the machine is doing over both columns instead of one. Every qedit run
starts with the engine's encoding cache emptied, so it encodes what the reference encodes: reuse
across requests is a real feature, but a bench that repeats one request would credit it to every
run. Warm-ups run min(steps, 2) steps: they are there to load kernels, allocate and compile, and
a step is the same work whatever the step count.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from qedit.bench.inputs import DEFAULT_PROMPT, default_size, max_pixel_diff, noise_image, working_size
from qedit.bench.probes import Clock, MemoryMeter, PeakMemory, TransformerProbe, weight_bytes
from qedit.bench.reference import build_pipeline, own_copy_reason, run_reference
from qedit.engine.geometry import resize
from qedit.errors import InvalidInput
from qedit.models.batching import BatchItem
from qedit.models.options import EngineOptions
from qedit.models.protocol import EditRequest
from qedit.models.specs import ModelSpec
from qedit.params import EditParams, validate

STAGES = ("encode", "denoise", "decode", "other")
PARAM_FLAGS = {"num_inference_steps": "--steps", "true_cfg_scale": "--cfg", "seed": "--seed", "prompt": "--prompt"}
WARMUP_STEPS = 2
BUSY = 0.75  # a CPU run that got less of its cores than this was slowed by something else on the machine
MIN_NOISE = 0.03  # ratios closer to 1 than this are not called a difference, however steady the runs
TOLERANCE = 1  # 8-bit levels: qedit and the reference agree to 1/255 with default options


@dataclass(frozen=True)
class BenchConfig:
    model: str = "small"
    size: tuple[int, int] | None = None  # the input image; None: a square at the spec's area
    steps: int | None = None  # None: the spec's default
    cfg: float | None = None  # None: the spec's default
    seed: int = 0
    repeat: int = 2
    batch: int = 0  # N edits through edit_batch vs N sequential edits; 0: skip
    reference: bool = True
    prompt: str = DEFAULT_PROMPT
    negative: str = " "
    device: str | None = None
    dtype: str | None = None
    options: EngineOptions = field(default_factory=EngineOptions)

    def check(self) -> None:
        if self.repeat < 1:
            raise InvalidInput(f"must be at least 1, got {self.repeat}", field="--repeat")
        if self.batch < 0 or self.batch == 1:
            raise InvalidInput(f"must be 0 (off) or at least 2, got {self.batch}", field="--batch")
        if self.steps is not None and self.steps < 1:
            raise InvalidInput(f"must be at least 1, got {self.steps}", field="--steps")
        if self.size is not None and min(self.size) < 16:
            raise InvalidInput(f"must be at least 16x16, got {self.size[0]}x{self.size[1]}", field="--size")
        try:  # the edit's own limits (steps, CFG, seed, prompt), named by the bench's flags
            self.params(self.steps, self.cfg)
        except InvalidInput as e:
            raise InvalidInput(e.message, field=PARAM_FLAGS.get(e.field or "", e.field)) from None

    def params(self, steps: int | None, cfg: float | None, **changes: Any) -> EditParams:
        """The edit both sides run; ``fit="reference"``: qedit sizes its canvas as the reference does."""
        data = {
            "prompt": self.prompt,
            "negative_prompt": self.negative,
            "true_cfg_scale": cfg,
            "num_inference_steps": steps,
            "seed": self.seed,
            "fit": "reference",
        }
        return validate(EditParams, {**data, **changes})


@dataclass
class Run:
    """One measured edit of one side."""

    side: str
    total: float
    stages: dict[str, float]  # STAGES
    steps: list[float]  # seconds of each denoising step
    transformer_seconds: float
    calls: int
    passes: int
    computed_passes: float | None
    memory: PeakMemory
    image: Image.Image
    engine_stats: dict[str, int] = field(default_factory=dict)
    cpu_busy: float | None = None  # CPU time / (wall time x torch threads): < 1 when the machine was shared


@dataclass
class Side:
    name: str
    transformer_bytes: int
    runs: list[Run] = field(default_factory=list)


@dataclass
class BatchOutcome:
    n: int
    sequential: list[float] = field(default_factory=list)  # seconds for N edits one after another
    batched: list[float] = field(default_factory=list)  # seconds for one edit_batch of N
    sequential_passes: int = 0
    batched_calls: int = 0
    sequential_calls: int = 0
    max_diff: int | None = None  # batched vs sequential outputs, same seeds and prompts
    skipped: str | None = None
    error: str | None = None


@dataclass
class BenchResult:
    config: BenchConfig
    model_id: str
    spec: str
    device: str
    dtype: str
    input_size: tuple[int, int]
    working_size: tuple[int, int]
    steps: int
    cfg: float
    load_seconds: float
    qedit: Side
    reference: Side | None = None
    reference_mode: str | None = None
    max_diff: int | None = None
    batch: BatchOutcome | None = None
    notes: list[str] = field(default_factory=list)


def _clear_encodings(engine: Any) -> None:
    cache = getattr(engine, "encodings", None)
    if cache is not None and hasattr(cache, "clear"):
        cache.clear()


def _edit_request(config: BenchConfig, image: Image.Image, steps: int, cfg: float, **changes: Any) -> EditRequest:
    return EditRequest(params=config.params(steps, cfg, **changes), images=(image,))


def run_qedit(engine: Any, probe: TransformerProbe, request: EditRequest, clock: Clock) -> Run:
    _clear_encodings(engine)
    elapsed: list[float] = []
    probe.reset()
    with MemoryMeter(engine.components.device) as meter:
        start, cpu = clock(), time.process_time()
        result = engine.edit(request, on_step=lambda step, total, seconds: elapsed.append(seconds))
        total, cpu = clock() - start, time.process_time() - cpu
    t = result.timings
    stages = {name: float(t.get(name, 0.0)) for name in STAGES[:3]}
    stages["other"] = max(0.0, total - sum(stages.values()))
    counts = probe.counts
    return Run(
        side="qedit",
        total=total,
        stages=stages,
        steps=[b - a for a, b in itertools.pairwise([0.0, *elapsed])],
        transformer_seconds=counts.seconds,
        calls=counts.calls,
        passes=counts.passes,
        computed_passes=counts.computed_passes,
        memory=meter.result,  # type: ignore[arg-type]
        image=result.outputs[0].image,
        engine_stats=dict(result.stats),
        cpu_busy=cpu_busy(cpu, total, clock),
    )


def run_pipeline(
    pipe: Any, spec: ModelSpec, probe: TransformerProbe, request: EditRequest, clock: Clock, device: Any
) -> Run:
    params = request.params
    probe.reset()
    with MemoryMeter(device) as meter:
        start, cpu = clock(), time.process_time()
        image, times = run_reference(
            pipe,
            spec,
            list(request.images),
            prompt=params.prompt,
            negative=params.negative_prompt,
            steps=params.num_inference_steps,  # type: ignore[arg-type]
            cfg=params.true_cfg_scale,  # type: ignore[arg-type]
            seed=params.seed,
            clock=clock,
        )
        total, cpu = clock() - start, time.process_time() - cpu
    stages = {"encode": times.encode, "denoise": times.denoise, "decode": times.decode}
    stages["other"] = max(0.0, total - sum(stages.values()))
    counts = probe.counts
    return Run(
        side="reference",
        total=total,
        stages=stages,
        steps=times.steps,
        transformer_seconds=counts.seconds,
        calls=counts.calls,
        passes=counts.passes,
        computed_passes=counts.computed_passes,
        memory=meter.result,  # type: ignore[arg-type]
        image=image,
        cpu_busy=cpu_busy(cpu, total, clock),
    )


def cpu_busy(cpu: float, wall: float, clock: Clock) -> float | None:
    """How much of the CPU the run got: its threads' CPU time over what they could have had.

    On a shared machine a run that waited for the cores shows well under 1 here, which says its
    time is not the engine's; on CUDA the host mostly waits, so there is nothing to tell."""
    import torch

    if clock.cuda or wall <= 0:
        return None
    return cpu / (wall * torch.get_num_threads())


def _compare(ours: Image.Image, theirs: Image.Image) -> int:
    """qedit's output against the reference's; the reference's brought to qedit's size when the input was
    not at the working size (qedit returns the input's size, the reference the working size)."""
    if theirs.size != ours.size:
        theirs = resize(theirs, ours.size)
    return max_pixel_diff(ours, theirs)


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda line: None) -> BenchResult:
    """Load, warm up, run interleaved, and (``batch``) compare request batching; nothing is printed
    but ``log``'s progress lines."""
    from qedit.engine.pipeline import Engine

    config.check()
    log(f"loading {config.model} ...")
    start = time.perf_counter()
    engine = Engine.load(config.model, device=config.device, dtype=config.dtype, options=config.options)
    load_seconds = time.perf_counter() - start
    c = engine.components
    spec = engine.spec
    size = config.size or default_size(spec)
    steps = config.steps or spec.default_steps
    cfg = config.cfg if config.cfg is not None else spec.default_cfg
    clock = Clock(c.device)
    image = noise_image(*size, seed=config.seed)
    request = _edit_request(config, image, steps, cfg)
    warm = _edit_request(config, image, min(steps, WARMUP_STEPS), cfg)
    result = BenchResult(
        config=config,
        model_id=engine.model_id,
        spec=spec.name,
        device=str(c.device),
        dtype=str(c.dtype).removeprefix("torch."),
        input_size=size,
        working_size=working_size(spec, size),
        steps=steps,
        cfg=cfg,
        load_seconds=load_seconds,
        qedit=Side("qedit", weight_bytes(c.transformer)),
    )
    probe = TransformerProbe(c.transformer, clock)
    probes = [probe]
    try:
        ref = _reference(config, engine, probe, log) if config.reference else None
        if ref is not None:
            result.reference_mode = ref.mode
            result.reference = Side("reference", weight_bytes(ref.components.transformer))
            if ref.probe is not probe:
                probes.append(ref.probe)
        log("warm-up (not counted) ...")
        run_qedit(engine, probe, warm, clock)
        if ref is not None:
            ref.run(spec, warm, clock)
        diffs = []
        for r in range(config.repeat):
            log(f"run {r + 1}/{config.repeat}: qedit ...")
            ours = run_qedit(engine, probe, request, clock)
            result.qedit.runs.append(ours)
            if ref is not None and result.reference is not None:
                log(f"run {r + 1}/{config.repeat}: reference ...")
                theirs = ref.run(spec, request, clock)
                result.reference.runs.append(theirs)
                diffs.append(_compare(ours.image, theirs.image))
        result.max_diff = max(diffs) if diffs else None
        if config.batch:
            result.batch = run_batch(engine, probe, config, image, steps, cfg, clock, log)
    finally:
        for p in probes:
            p.remove()
    result.notes = notes(result)
    return result


@dataclass
class _Reference:
    pipe: Any  # the diffusers pipeline
    components: Any  # qedit.engine.loader.Components: qedit's own, or a plain copy
    probe: TransformerProbe
    mode: str  # how it relates to qedit's components, for the report

    def run(self, spec: ModelSpec, request: EditRequest, clock: Clock) -> Run:
        return run_pipeline(self.pipe, spec, self.probe, request, clock, self.components.device)


def _reference(config: BenchConfig, engine: Any, probe: TransformerProbe, log: Callable[[str], None]) -> _Reference:
    """The reference on qedit's components, or on a plain copy when the options change the transformer."""
    from qedit.engine import loader

    reason = own_copy_reason(config.options)
    if reason is None:
        c = engine.components
        return _Reference(build_pipeline(c), c, probe, "shared: diffusers' pipeline on qedit's loaded components")
    log(f"loading a plain copy for the reference ({reason}) ...")
    c = loader.load(config.model, device=config.device, dtype=config.dtype)
    return _Reference(build_pipeline(c), c, TransformerProbe(c.transformer, probe.clock), f"own plain copy ({reason})")


def run_batch(
    engine: Any,
    probe: TransformerProbe,
    config: BenchConfig,
    image: Image.Image,
    steps: int,
    cfg: float,
    clock: Clock,
    log: Callable[[str], None],
) -> BatchOutcome:
    """N edits (seeds and prompts differ) through one ``edit_batch`` vs N ``edit`` calls, interleaved."""
    n = config.batch
    outcome = BatchOutcome(n=n)
    if not callable(getattr(engine, "edit_batch", None)):
        outcome.skipped = "this engine has no edit_batch (request batching is not built yet)"
        return outcome
    requests = [
        _edit_request(config, image, steps, cfg, prompt=f"{config.prompt} (variation {i + 1})", seed=config.seed + i)
        for i in range(n)
    ]
    for r in range(config.repeat):
        log(f"batch {r + 1}/{config.repeat}: {n} sequential edits ...")
        _clear_encodings(engine)
        probe.reset()
        start = clock()
        sequential = [engine.edit(req).outputs[0].image for req in requests]
        outcome.sequential.append(clock() - start)
        outcome.sequential_calls, outcome.sequential_passes = probe.counts.calls, probe.counts.passes
        log(f"batch {r + 1}/{config.repeat}: one edit_batch of {n} ...")
        _clear_encodings(engine)
        probe.reset()
        start = clock()
        results = engine.edit_batch([BatchItem(req) for req in requests])
        outcome.batched.append(clock() - start)
        outcome.batched_calls = probe.counts.calls
        failed = [res for res in results if isinstance(res, Exception)]
        if failed:
            outcome.error = f"edit_batch failed an item: {type(failed[0]).__name__}: {failed[0]}"
            return outcome
        diff = max(_compare(res.outputs[0].image, seq) for res, seq in zip(results, sequential, strict=True))
        outcome.max_diff = diff if outcome.max_diff is None else max(outcome.max_diff, diff)
    return outcome


# -- what the figures say ---------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def spread(values: list[float]) -> float:
    """How much repeated runs of one side differ, relative to their median."""
    return (max(values) - min(values)) / median(values) if len(values) > 1 and median(values) else 0.0


def notes(result: BenchResult) -> list[str]:
    """Plain statements about what the figures show, including where qedit is not better."""
    out = []
    o = result.config.options
    q, ref = result.qedit, result.reference
    changes = o.changes_pixels()
    if ref is not None and ref.runs:
        ratio = median([r.total for r in q.runs]) / median([r.total for r in ref.runs])
        noise = max(MIN_NOISE, spread([r.total for r in q.runs]), spread([r.total for r in ref.runs]))
        starved = [r.cpu_busy for r in (*q.runs, *ref.runs) if r.cpu_busy is not None and r.cpu_busy < BUSY]
        if starved:
            out.append(
                f"the machine was busy with other work: {len(starved)} run(s) got only {min(starved):.0%} of "
                f"the CPU they could use, so their times are not the engine's; rerun on an idle machine"
            )
        if ratio > 1.0 + noise:
            out.append(f"qedit is SLOWER than the reference end to end: {ratio:.2f}x its time")
        elif ratio > 1.0 - noise:
            out.append(
                f"qedit is not measurably faster than the reference: {ratio:.2f}x its time, within the "
                f"{noise:.0%} the runs vary by"
            )
        if result.max_diff is not None and result.max_diff > TOLERANCE:
            if changes:
                out.append(f"outputs differ by {result.max_diff} levels; expected: {', '.join(changes)} changes pixels")
            elif result.steps == 1:
                out.append(
                    f"outputs differ by {result.max_diff} levels; expected at 1 step: the reference's terminal "
                    "shift divides 0 by 0 there (a black image), which qedit skips (qedit.engine.latents)"
                )
            else:
                out.append(f"OUTPUTS DIFFER by {result.max_diff} levels (> {TOLERANCE}) with options that should not")
        if o.quantize != "none" and q.transformer_bytes >= ref.transformer_bytes:
            out.append(
                f"quantize={o.quantize} was asked for, but qedit's transformer weights are not smaller than the "
                "reference's: the engine did not quantise them"
            )
    if o.cache != "none" and q.runs:
        run = q.runs[-1]
        cached = run.engine_stats.get("cached_passes")
        skipped_blocks = run.computed_passes is not None and run.computed_passes < run.passes
        if not cached and not skipped_blocks:
            out.append(f"cache={o.cache} was asked for, but every block ran in every pass (no step was reused)")
    if result.batch is not None and result.batch.sequential and result.batch.batched:
        b = result.batch
        gain = median(b.sequential) / median(b.batched)
        if gain < 1.0:
            out.append(f"request batching is SLOWER than sequential edits here: {gain:.2f}x the throughput")
    return out
