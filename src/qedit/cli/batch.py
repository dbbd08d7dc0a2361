"""``qedit batch IN_DIR -p TEXT -o OUT_DIR``: one instruction over every image in a folder.

Built for long unattended runs:

- The model loads once, and only when there is something to do (a finished batch re-run loads
  nothing).
- Resuming is running the same command again: an input whose outputs all exist is skipped, if
  they answer the same request. Each output records ``metadata.request_digest`` (parameters as
  given, the input's bytes, the model's canonical id, pixel-changing engine options); an output
  recording another one (the prompt, a flag, the input or the model changed) is redone and
  replaced, since it is qedit's own and the command now asks for something else. A file in the
  output's place that qedit batch did not write (no such record) is never overwritten: that input
  fails, saying so. Outputs are written atomically (``imageio.save_image``), so an existing output
  is a complete one.
- A file that cannot be read (truncated, not an image, unsupported format) does not stop the run: it
  is reported as it happens and listed with its reason at the end, and the exit code is then 1 so
  scripts notice. Problems that would fail every file (bad flags, a missing model, an output that
  cannot be written) stop at once with exit code 2, like every other command.
- Ctrl-C stops between denoising steps; what was written stays, and the next run resumes from there.

Output names: ``OUT_DIR/<stem>.<ext>`` (``<stem>_<i>.<ext>`` with ``--num`` > 1), where ``ext`` is
``--format`` as typed (default png). Inputs sharing a stem in one folder (``a.jpg``, ``a.png``) get
``<stem>_<their extension>`` so neither overwrites the other. ``--recursive`` mirrors sub-folders.
With a fixed ``--seed`` every file uses that seed (so each output is reproducible alone); with -1 each
edit draws its own, recorded in the output's metadata. ``--lora`` and ``--fast`` apply to every file
(a batch is one instruction over a folder, so there is no per-file parameter); their files are
checked before anything loads.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from qedit.cli import edit_flags, engine_flags, lora_flags
from qedit.errors import InvalidInput, quote
from qedit.params import EditParams
from qedit.request_check import DEFAULT_SIDES, SideLimits

if TYPE_CHECKING:
    from qedit.models.protocol import EditEngine

EXIT_SOME_FAILED = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="edit every image in a folder with one instruction (resumable)",
        description="Edit every jpg, jpeg, png, webp, bmp and tiff image in IN_DIR with one instruction, writing "
        "OUT_DIR/<name>.<format>. Re-running the same command skips finished outputs. Unreadable files are "
        "listed at the end and make the exit code 1; they never stop the run.",
    )
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of input images")
    p.add_argument("-p", "--prompt", required=True, help="the instruction (English, Chinese or mixed)")
    p.add_argument(
        "-o",
        "--output",
        dest="out_dir",
        required=True,
        type=Path,
        metavar="OUT_DIR",
        help="folder for the outputs (created if missing)",
    )
    p.add_argument("-r", "--recursive", action="store_true", help="also edit images in sub-folders (mirrored)")
    edit_flags.add_edit_arguments(p)
    edit_flags.add_input_limits(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Job:
    """One input file and the output file(s) it becomes."""

    source: Path
    name: str  # the input relative to IN_DIR, as shown to the user
    outputs: tuple[Path, ...]


@dataclass(frozen=True)
class Resume:
    """What, besides the parameters and the input, decides an output: compared on resume."""

    model: str  # snapshot.canonical_model of --model
    engine_options: dict[str, str] = field(default_factory=dict)  # EngineOptions.changes_pixels()


DONE, TODO, STALE = "done", "todo", "stale"


@dataclass
class Report:
    edited: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    ignored: int = 0  # files in IN_DIR without a supported extension


def find_inputs(in_dir: Path, recursive: bool, exclude: Path | None = None) -> tuple[list[Path], int]:
    """Supported images under ``in_dir`` (sorted, hidden files and ``exclude`` left out) and how many
    other files were ignored. The extension picks candidates; the bytes are checked when loaded."""
    from qedit import imageio

    found: list[Path] = []
    ignored = 0
    exclude = exclude.resolve() if exclude is not None else None
    candidates = in_dir.rglob("*") if recursive else in_dir.iterdir()
    for path in candidates:
        rel = path.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files, and the temporary files of an interrupted save
        if exclude is not None and (path.resolve() == exclude or exclude in path.resolve().parents):
            continue
        if not path.is_file():
            continue
        if imageio.is_supported_name(path):
            found.append(path)
        else:
            ignored += 1
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix()), ignored


def plan(in_dir: Path, out_dir: Path, files: list[Path], ext: str, num: int) -> list[Job]:
    """Output paths for every input; stems shared within a folder are told apart by their extension.

    The names depend only on the listing, so every run of the same command picks the same names and
    resuming finds what an earlier run wrote.
    """
    by_stem: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for f in files:
        by_stem[(f.relative_to(in_dir).parent, f.stem)].append(f)
    jobs = []
    for f in files:
        rel = f.relative_to(in_dir)
        stem = f.stem if len(by_stem[(rel.parent, f.stem)]) == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}"
        folder = out_dir / rel.parent
        names = [f"{stem}.{ext}"] if num == 1 else [f"{stem}_{i}.{ext}" for i in range(num)]
        jobs.append(Job(source=f, name=rel.as_posix(), outputs=tuple(folder / n for n in names)))
    return jobs


def run(args: argparse.Namespace) -> int:
    from qedit.models.snapshot import canonical_model

    fmt = edit_flags.output_format(args)
    ext = (args.format or "png").lower()
    params = edit_flags.params_from_args(args)
    sides = edit_flags.side_limits(args)
    options = engine_flags.engine_options_from_args(args)
    resume = Resume(canonical_model(edit_flags.model_reference(args)), options.changes_pixels())
    in_dir: Path = args.in_dir
    out_dir: Path = args.out_dir
    if not in_dir.exists():
        raise InvalidInput(f"no such directory: {_shown(in_dir)}", field="IN_DIR")
    if not in_dir.is_dir():
        raise InvalidInput(f"{_shown(in_dir)} is not a directory", field="IN_DIR")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{_shown(out_dir)} exists and is not a directory", field="OUT_DIR")
    files, ignored = find_inputs(in_dir, args.recursive, exclude=out_dir if out_dir.exists() else None)
    if not files:
        where = f"{in_dir} or its sub-folders" if args.recursive else str(in_dir)
        raise InvalidInput(f"no images (jpg, jpeg, png, webp, bmp, tiff) in {where}", field="IN_DIR")
    with edit_flags.errors_name_flags():
        lora_flags.check_before_load(edit_flags.model_reference(args), params)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInput(f"cannot create {_shown(out_dir)}: {e.strerror or e}", field="OUT_DIR") from None
    jobs = plan(in_dir, out_dir, files, ext, params.num_images)
    report = Report(ignored=ignored)
    try:
        with edit_flags.errors_name_flags():
            process(
                jobs,
                params,
                fmt,
                lambda: edit_flags.load_engine(args),
                report,
                progress=not args.quiet,
                resume=resume,
                sides=sides,
            )
    except KeyboardInterrupt:
        print_summary(report, interrupted=True)
        raise
    print_summary(report)
    return EXIT_SOME_FAILED if report.failed else 0


def process(
    jobs: list[Job],
    params: EditParams,
    fmt: str,
    load_engine: Callable[[], EditEngine],
    report: Report,
    *,
    progress: bool = True,
    resume: Resume | None = None,
    sides: SideLimits = DEFAULT_SIDES,
) -> Report:
    """Edit every unfinished job with one engine (loaded on the first job that needs it).

    A job is finished when all its outputs exist and record this request's digest (``resume``: the
    model and engine options the digest covers besides ``params`` and the input).
    """
    from tqdm import tqdm

    from qedit import imageio
    from qedit.cli.progress import run_edit
    from qedit.metadata import REQUEST_KEY, request_digest
    from qedit.models.protocol import EditRequest
    from qedit.request_check import check_image_sides

    resume = resume or Resume(model="")
    digests: dict[Path, str] = {}
    todo: list[Job] = []
    stale = 0
    for job in jobs:
        try:
            digests[job.source] = request_digest(params, [job.source.read_bytes()], resume.model, resume.engine_options)
        except OSError:
            todo.append(job)  # its load below says what is wrong with the file
            continue
        state = _state(job, digests[job.source])
        if state == DONE:
            report.skipped.append(job)
        elif state in (TODO, STALE):
            todo.append(job)
            stale += state == STALE
        else:
            _fail(report, job, state, progress)
    if report.skipped:
        _say(f"skipping {len(report.skipped)} already edited (outputs exist)", progress, sys.stderr)
    if stale:
        _say(
            f"redoing {stale} whose outputs were made by another request (prompt, parameters, input or model)",
            progress,
            sys.stderr,
        )
    adapters = lora_flags.describe(params)
    if adapters and todo:
        _say(f"editing with {adapters}", progress, sys.stderr)
    engine: EditEngine | None = None
    files_bar = tqdm(
        total=len(todo),
        desc="images",
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not progress or not todo,
        position=0,
    )
    try:
        for job in todo:
            files_bar.set_postfix_str(job.name, refresh=True)
            try:
                image = imageio.load_image(job.source, field=job.name)
                check_image_sides(image.size, sides, job.name)
            except InvalidInput as e:
                _fail(report, job, e.message, progress)
                files_bar.update(1)
                continue
            history = _history(job.source)
            if engine is None:
                engine = load_engine()
            request = EditRequest(params=params, images=(image,), parent=str(job.source), history=history)
            try:
                result = run_edit(
                    partial(engine.edit, request), progress=progress, desc=f"  {job.name}", leave=False, position=1
                )
            except InvalidInput as e:
                if re.split(r"[.\[]", e.field or "")[0] in EditParams.model_fields:
                    raise  # a parameter problem fails every file alike: stop now (exit 2)
                _fail(report, job, e.message, progress)
                files_bar.update(1)
                continue
            for out, path in zip(result.outputs, job.outputs, strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                metadata = {**out.metadata, REQUEST_KEY: digests[job.source]} if job.source in digests else out.metadata
                imageio.save_image(out.image, path, fmt, metadata)
                _say(f"{path}  seed {out.seed}  {out.image.size[0]}x{out.image.size[1]}", progress, sys.stdout)
            report.edited.append(job)
            files_bar.update(1)
    finally:
        files_bar.close()
    return report


def _state(job: Job, digest: str) -> str:
    """DONE (every output records ``digest``), TODO (none exists), STALE (qedit batch's own outputs,
    some missing or recording another request), or, for a file in an output's place that qedit batch
    did not write, the reason the job fails rather than overwrite it."""
    from qedit import imageio
    from qedit.metadata import REQUEST_KEY

    existing = [p for p in job.outputs if p.exists()]
    if not existing:
        return TODO
    records = []
    for path in existing:
        try:
            meta = imageio.read_metadata(path)
        except InvalidInput:
            meta = {}
        if REQUEST_KEY not in meta and not meta.get("engine", "").startswith("qedit "):
            return (
                f"{_shown(path)} exists and was not written by qedit; "
                "move it away or choose another OUT_DIR (it is not overwritten)"
            )
        records.append(meta.get(REQUEST_KEY))
    return DONE if len(existing) == len(job.outputs) and all(r == digest for r in records) else STALE


def _shown(path: Path) -> str:
    return quote(str(path), 200, bare=True)


def _history(source: Path) -> tuple[dict, ...]:
    """The input's own chain of earlier qedit edits, carried into the output (as ``qedit edit`` does)."""
    from qedit import imageio
    from qedit.metadata import history_from_metadata

    try:
        return history_from_metadata(imageio.read_metadata(source))
    except InvalidInput:
        return ()


def _fail(report: Report, job: Job, reason: str, progress: bool) -> None:
    report.failed.append((job, reason))
    _say(f"failed: {job.name}: {reason}", progress, sys.stderr)


def _say(line: str, progress: bool, stream) -> None:  # type: ignore[no-untyped-def]
    """Print above the progress bars (tqdm.write), or plainly without them."""
    if progress:
        from tqdm import tqdm

        tqdm.write(line, file=stream)
    else:
        print(line, file=stream, flush=True)


def print_summary(report: Report, *, interrupted: bool = False) -> None:
    """Counts on stdout; the failures, each with its reason, on stderr."""
    parts = [
        f"{len(report.edited)} edited",
        f"{len(report.skipped)} skipped (already done)",
        f"{len(report.failed)} failed",
    ]
    if report.ignored:
        parts.append(f"{report.ignored} other file(s) ignored")
    head = "stopped" if interrupted else "done"
    print(f"{head}: " + ", ".join(parts), flush=True)
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be edited:", file=sys.stderr)
        for job, reason in report.failed:
            print(f"  {job.name}: {reason}", file=sys.stderr)
    if interrupted:
        print("run the same command again to resume", file=sys.stderr)
