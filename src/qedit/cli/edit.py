"""``qedit edit IMAGE [IMAGE ...] -p TEXT -o OUT``: one edit, straight through the engine.

The model loads once per call; a progress bar shows step n/N, it/s and ETA; Ctrl-C cancels
between steps and writes nothing. With ``--lora``/``--fast`` the bar says so, and a line per adapter
that ran (with its sha256, as recorded in the output's metadata) follows the outputs. When the input
is itself a qedit output, its chain of edits is carried into the new file's metadata.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from qedit.cli import appearance, edit_flags, lora_flags
from qedit.cli.progress import run_edit
from qedit.errors import InvalidInput, quote


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit",
        help="edit 1-3 images by instruction",
        description="Edit an image by a natural-language instruction (1-3 images for the plus variants; "
        "the last image is the one edited, the others are references).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="input image(s): jpg, jpeg, png, webp, bmp, tiff")
    p.add_argument("-p", "--prompt", required=True, help="the instruction (English, Chinese or mixed)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (.png, .jpg, .webp); default: IMAGE-edited.png beside the edited image, never "
        "overwriting (-edited-2, -3, ...)",
    )
    edit_flags.add_edit_arguments(p)
    appearance.add_appearance_arguments(p)
    edit_flags.add_input_limits(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def output_paths(output: Path, n: int) -> list[Path]:
    """``out.png`` for one output; ``out_0.png``, ``out_1.png``, ... for several."""
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(n)]


def default_output(image: Path, fmt: str | None, n: int) -> Path:
    """``photo-edited.png`` beside ``photo.jpg`` (PNG keeps every pixel and the metadata), or the next
    free ``photo-edited-2.png``, ... : a default never overwrites."""
    from qedit import imageio

    ext = {"jpeg": ".jpg", "webp": ".webp"}.get(imageio.normalise_format(fmt) if fmt else "png", ".png")
    for k in range(1, 10_000):
        candidate = image.with_name(f"{image.stem}-edited{'' if k == 1 else f'-{k}'}{ext}")
        if not any(path.exists() for path in output_paths(candidate, n)):
            return candidate
    raise InvalidInput(f"no free output name beside {quote(str(image), 200, bare=True)}; give -o", field="output")


def run(args: argparse.Namespace) -> int:
    from qedit import imageio
    from qedit.metadata import history_from_metadata
    from qedit.models.protocol import EditRequest
    from qedit.request_check import check_image_sides

    limits = edit_flags.side_limits(args)
    images = tuple(imageio.load_image(path, field=f"image[{i}]") for i, path in enumerate(args.images))
    for i, image in enumerate(images):
        check_image_sides(image.size, limits, f"image[{i}]")
    mask, appearance_fields = appearance.appearance_from_args(args)
    params = edit_flags.params_from_args(args, **appearance_fields)
    if args.output is None:
        args.output = default_output(Path(args.images[-1]), getattr(args, "format", None), params.num_images)
    fmt = edit_flags.output_format(args)
    if not args.output.parent.is_dir():
        raise InvalidInput(f"directory {quote(str(args.output.parent), 200, bare=True)} does not exist", field="output")
    history = history_from_metadata(imageio.read_metadata(args.images[-1]))
    engine = edit_flags.load_checked_engine(args, params, [image.size for image in images], mask)
    request = EditRequest(params=params, images=images, mask=mask, parent=str(args.images[-1]), history=history)
    adapters = lora_flags.describe(params)
    with edit_flags.errors_name_flags():  # a LoRA the engine refuses names --lora[i], as before loading
        result = run_edit(
            partial(engine.edit, request),
            progress=not args.quiet,
            desc=f"denoising ({adapters})" if adapters else "denoising",
            cancelled="cancelled; nothing written",
        )
    for out, path in zip(result.outputs, output_paths(args.output, len(result.outputs)), strict=True):
        imageio.save_image(out.image, path, fmt, out.metadata)
        print(f"{path}  seed {out.seed}  {out.image.size[0]}x{out.image.size[1]}")
    for line in lora_flags.summary_lines(result.outputs[0].metadata, params) if result.outputs else ():
        print(line)
    return 0
