"""``qedit session``: chained edits with rollback (new, edit, log, checkout, undo, export).

A session lives in ``./NAME.qedit/`` unless ``--dir`` names another directory; see
``qedit.sessions`` for the layout and docs/appearance-editing.md for when to confine edits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qedit.cli import appearance, common


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, metavar="DIR", help="the session directory (default: ./NAME.qedit)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "session",
        help="chained edits with rollback",
        description="Edit an image step by step, keeping every step on disk: go back to any step, branch, "
        "export the chain. With --mask, --box-mask or --preserve auto, untouched pixels stay the "
        "original's across any number of steps.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    new = actions.add_parser("new", help="start a session; step 0 = IMAGE")
    new.add_argument("name", metavar="NAME")
    new.add_argument("image", type=Path, metavar="IMAGE")
    _dir_arg(new)
    new.set_defaults(func=run_new)

    ed = actions.add_parser("edit", help="edit HEAD's image; the result becomes the new HEAD")
    ed.add_argument("name", metavar="NAME")
    ed.add_argument("-p", "--prompt", required=True, help="the instruction")
    _dir_arg(ed)
    common.add_edit_arguments(ed)
    appearance.add_appearance_arguments(ed)
    ed.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ed.set_defaults(func=run_edit)

    log = actions.add_parser("log", help="list the steps (HEAD marked with *)")
    log.add_argument("name", metavar="NAME")
    _dir_arg(log)
    log.set_defaults(func=run_log)

    co = actions.add_parser("checkout", help="make step N HEAD; the next edit branches from it")
    co.add_argument("name", metavar="NAME")
    co.add_argument("step", type=int, metavar="N")
    _dir_arg(co)
    co.set_defaults(func=run_checkout)

    undo = actions.add_parser("undo", help="HEAD = HEAD's parent")
    undo.add_argument("name", metavar="NAME")
    _dir_arg(undo)
    undo.set_defaults(func=run_undo)

    ex = actions.add_parser("export", help="write step 0 .. HEAD as OUT_DIR/000.png ... plus steps.json")
    ex.add_argument("name", metavar="NAME")
    ex.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    _dir_arg(ex)
    ex.set_defaults(func=run_export)


def run_new(args: argparse.Namespace) -> int:
    from qedit import imageio
    from qedit.sessions import Session, check_name

    check_name(args.name)
    image = imageio.load_image(args.image, field="image")
    session = Session.create(args.name, image, directory=args.dir, source=str(args.image))
    print(f"session {session.name} in {session.directory}: step 0 = {args.image} ({image.size[0]}x{image.size[1]})")
    return 0


def run_edit(args: argparse.Namespace) -> int:
    from qedit.cli.progress import step_bar
    from qedit.errors import EditCancelled
    from qedit.models.protocol import CancelToken
    from qedit.sessions import Session, edit

    session = Session.open(args.name, args.dir)
    size = session.step(session.head).size
    mask, fields = appearance.appearance_from_args(args, size=size)
    params = common.params_from_args(args, **fields)
    engine = common.load_engine(args)
    cancel = CancelToken()
    with step_bar(enabled=not args.quiet) as on_step:
        try:
            steps = edit(session, engine, params, mask, on_step=on_step, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        except EditCancelled:
            print("qedit session: cancelled; nothing recorded", file=sys.stderr)
            return 130
    for step in steps:
        mark = "*" if step.index == session.head else " "
        print(f"{mark} step {step.index} (from {step.parent})  seed {step.seed}  {session.path(step.image)}")
    return 0


def run_log(args: argparse.Namespace) -> int:
    from qedit.sessions import Session, summary

    session = Session.open(args.name, args.dir)
    on_chain = {s.index for s in session.chain()}
    print(f"session {session.name} in {session.directory}: {len(session.steps)} step(s), HEAD = {session.head}")
    for step in session.steps:
        mark = "*" if step.index == session.head else ("|" if step.index in on_chain else " ")
        parent = "" if step.parent is None else f"<- {step.parent}"
        print(f"{mark} {step.index:3d} {parent:>6}  {summary(step)}")
    return 0


def run_checkout(args: argparse.Namespace) -> int:
    from qedit.sessions import Session

    session = Session.open(args.name, args.dir)
    step = session.checkout(args.step)
    print(f"HEAD = step {step.index}")
    return 0


def run_undo(args: argparse.Namespace) -> int:
    from qedit.sessions import Session

    session = Session.open(args.name, args.dir)
    step = session.undo()
    print(f"HEAD = step {step.index}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from qedit.sessions import Session

    session = Session.open(args.name, args.dir)
    paths = session.export(args.out_dir)
    print(f"{len(paths)} image(s) and steps.json written to {args.out_dir}")
    return 0
