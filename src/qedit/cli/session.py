"""``qedit session``: chained edits with rollback (new, edit, log, checkout, undo, export).

A session lives in ``./NAME.qedit/`` unless ``--dir`` names another directory; see
``qedit.sessions`` for the layout and docs/appearance-editing.md for when to confine edits.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from qedit.cli import appearance, edit_flags, lora_flags, progress
from qedit.errors import InvalidInput

if TYPE_CHECKING:
    from qedit.sessions import EditSession, Step


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "session",
        help="chained edits with rollback",
        description="Edit an image step by step, keeping every step on disk: go back to any step, branch, "
        "export the chain. With --mask, --box-mask or --preserve auto, untouched pixels stay the "
        "original's across any number of steps.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = _action(actions, "new", "start a session; step 0 = IMAGE", run_new)
    new.add_argument("image", type=Path, metavar="IMAGE")
    edit_flags.add_input_limits(new)
    ed = _action(actions, "edit", "edit HEAD's image; the result becomes the new HEAD", run_edit)
    ed.add_argument("-p", "--prompt", required=True, help="the instruction")
    edit_flags.add_edit_arguments(ed, output_format=False)
    ed.add_argument("--format", help=argparse.SUPPRESS)  # refused with a reason (run_edit), not as "unrecognized"
    appearance.add_appearance_arguments(ed)
    ed.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _action(actions, "log", "list the steps (HEAD marked with *)", run_log)
    _action(actions, "checkout", "make step N HEAD; the next edit branches from it", run_checkout).add_argument(
        "step", type=int, metavar="N"
    )
    _action(actions, "undo", "HEAD = HEAD's parent", run_undo)
    _action(actions, "export", "write step 0 .. HEAD as OUT_DIR/000.png ... plus steps.json", run_export).add_argument(
        "out_dir", type=Path, metavar="OUT_DIR"
    )


def _action(
    actions: argparse._SubParsersAction, name: str, about: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """``qedit session ACTION NAME [--dir DIR]``; the action's own arguments are added after NAME."""
    p = actions.add_parser(name, help=about)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", type=Path, metavar="DIR", help="the session directory (default: ./NAME.qedit)")
    p.set_defaults(func=func)
    return p


def _open(args: argparse.Namespace) -> EditSession:
    from qedit.sessions import EditSession

    return EditSession.open(args.name, args.dir)


def run_new(args: argparse.Namespace) -> int:
    from qedit import imageio
    from qedit.request_check import check_image_sides
    from qedit.sessions import EditSession, check_name

    check_name(args.name)
    limits = edit_flags.side_limits(args)
    image = imageio.load_image(args.image, field="image")
    check_image_sides(image.size, limits, "image")  # later steps are the session's own outputs
    session = EditSession.create(args.name, image, directory=args.dir, source=str(args.image))
    print(f"session {session.name} in {session.directory}: step 0 = {args.image} ({image.size[0]}x{image.size[1]})")
    return 0


def run_edit(args: argparse.Namespace) -> int:
    from qedit.sessions import edit

    if args.format is not None:
        raise InvalidInput(
            "a session keeps every step as lossless PNG (the untouched pixels stay step 0's); "
            "convert a step after `qedit session export` instead",
            field="--format",
        )
    session = _open(args)
    mask, fields = appearance.appearance_from_args(args)
    params = edit_flags.params_from_args(args, **fields)
    engine = edit_flags.load_checked_engine(args, params, [session.step(session.head).size], mask)
    adapters = lora_flags.describe(params)
    with edit_flags.errors_name_flags():
        steps = progress.run_edit(
            partial(edit, session, engine, params, mask),
            progress=not args.quiet,
            desc=f"denoising ({adapters})" if adapters else "denoising",
            cancelled="cancelled; nothing recorded",
        )
    for step in steps:
        mark = "*" if step.index == session.head else " "
        print(f"{mark} step {step.index} (from {step.parent})  seed {step.seed}  {session.path(step.image)}")
    if adapters:
        print(f"  with {adapters}")
    return 0


def run_log(args: argparse.Namespace) -> int:
    from qedit.sessions import summary

    session = _open(args)
    on_chain = {s.index for s in session.chain()}
    print(f"session {session.name} in {session.directory}: {len(session.steps)} step(s), HEAD = {session.head}")
    for step in session.steps:
        mark = "*" if step.index == session.head else ("|" if step.index in on_chain else " ")
        parent = "" if step.parent is None else f"<- {step.parent}"
        print(f"{mark} {step.index:3d} {parent:>6}  {summary(step)}")
    return 0


def run_checkout(args: argparse.Namespace) -> int:
    return _print_head(_open(args).checkout(args.step))


def run_undo(args: argparse.Namespace) -> int:
    return _print_head(_open(args).undo())


def _print_head(step: Step) -> int:
    print(f"HEAD = step {step.index}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    paths = _open(args).export(args.out_dir)
    print(f"{len(paths)} image(s) and steps.json written to {args.out_dir}")
    return 0
