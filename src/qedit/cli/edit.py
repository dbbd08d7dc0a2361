"""``qedit edit IMAGE [IMAGE ...] -p TEXT -o OUT``: one edit, straight through the engine.

The model loads once per call; a progress bar shows step n/N, it/s and ETA; Ctrl-C cancels
between steps and writes nothing. When the input is itself a qedit output, its chain of edits is
carried into the new file's metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qedit.cli import appearance, common
from qedit.cli.progress import step_bar
from qedit.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit",
        help="edit 1-3 images by instruction",
        description="Edit an image by a natural-language instruction (1-3 images for the plus variants; "
        "the last image is the one edited, the others are references).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="input image(s): jpg, jpeg, png, webp, bmp, tiff")
    p.add_argument("-p", "--prompt", required=True, help="the instruction (English, Chinese or mixed)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output file (.png, .jpg, .webp)")
    common.add_edit_arguments(p)
    appearance.add_appearance_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def output_paths(output: Path, n: int) -> list[Path]:
    """``out.png`` for one output; ``out_0.png``, ``out_1.png``, ... for several."""
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from qedit import imageio
    from qedit.errors import EditCancelled
    from qedit.metadata import history_from_metadata
    from qedit.models.protocol import CancelToken, EditRequest

    fmt = common.output_format(args)
    images = tuple(imageio.load_image(path, field=f"image[{i}]") for i, path in enumerate(args.images))
    mask, appearance_fields = appearance.appearance_from_args(args, size=images[-1].size)
    params = common.params_from_args(args, **appearance_fields)
    if not args.output.parent.is_dir():
        raise InvalidInput(f"directory {args.output.parent} does not exist", field="output")
    history = history_from_metadata(imageio.read_metadata(args.images[-1]))
    engine = common.load_engine(args)
    if len(images) > engine.max_images:
        raise InvalidInput(
            f"{engine.model_id} takes at most {engine.max_images} image(s), got {len(images)}", field="images"
        )
    cancel = CancelToken()
    request = EditRequest(params=params, images=images, mask=mask, parent=str(args.images[-1]), history=history)
    with step_bar(enabled=not args.quiet) as on_step:
        try:
            result = engine.edit(request, on_step=on_step, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        except EditCancelled:
            print("qedit edit: cancelled; nothing written", file=sys.stderr)
            return 130
    for out, path in zip(result.outputs, output_paths(args.output, len(result.outputs)), strict=True):
        imageio.save_image(out.image, path, fmt, out.metadata)
        print(f"{path}  seed {out.seed}  {out.image.size[0]}x{out.image.size[1]}")
    return 0
