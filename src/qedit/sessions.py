"""Chained edits with rollback: a session keeps every step's image and parameters on disk.

Users of the reference see quality collapse after 3-5 chained edits because every round sends the
whole image through the VAE again. A session edits its HEAD image and, when the edit is confined
(mask, ``box_mask``, or ``preserve="auto"``), the untouched pixels of each new step are the HEAD's
own bytes, so they stay step 0's bytes across any number of rounds. Every step is kept, so a user
can go back to any of them (``checkout``) and branch from there.

On disk (the default directory is ``./<name>.qedit/``)::

    session.json        {"format", "name", "head", "steps": [...]}: the only mutable file
    steps/000.png       step 0 = the original's decoded pixels; then one lossless PNG per step
    masks/003.png       the mask image a step was given, if any

``session.json`` is replaced atomically (temp file + fsync + rename) and written only after the
step's images are complete, so a crash or Ctrl-C leaves the session as it was (at worst an unused
PNG that the next step overwrites). Writers hold an ``flock`` on ``.lock`` while they re-read and
rewrite the file, so two ``qedit session`` processes on one session do not lose each other's steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from qedit import imageio, masks
from qedit.errors import InvalidInput, QeditError, quote
from qedit.files import write_atomic
from qedit.models.protocol import CancelToken, EditEngine, EditRequest, StepCallback
from qedit.params import EditParams
from qedit.request_check import check_request

FORMAT = 1
SESSION_FILE = "session.json"
SUFFIX = ".qedit"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Step:
    """One image in the session. Step 0 is the original (no params); every other step has a parent."""

    index: int
    parent: int | None
    image: str  # relative to the session directory: steps/NNN.png
    size: tuple[int, int]
    created: str  # ISO 8601, UTC
    params: dict[str, Any] | None = None  # EditParams.model_dump(mode="json") as requested
    model: str | None = None
    seed: int | None = None  # the seed actually used (params.seed may be -1)
    mask: str | None = None  # masks/NNN.png when the edit was given a mask image
    source: str | None = None  # step 0: the file the session started from

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(**{**data, "size": tuple(data["size"])})

    @property
    def edit_params(self) -> EditParams | None:
        return EditParams.model_validate(self.params) if self.params is not None else None


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidInput(
            "session names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; "
            f"got {quote(name)}",
            field="name",
        )
    return name


def default_dir(name: str) -> Path:
    """``./<name>.qedit`` in the current directory."""
    return Path(f"{check_name(name)}{SUFFIX}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class EditSession:
    """A session directory. Mutating methods re-read ``session.json`` under the lock first."""

    def __init__(self, directory: Path, name: str, head: int, steps: Sequence[Step]) -> None:
        self.directory = directory
        self.name = name
        self.head = head
        self.steps: list[Step] = list(steps)

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, image: Image.Image, *, directory: Path | None = None, source: str | None = None
    ) -> EditSession:
        """A new session whose step 0 is ``image`` (kept losslessly, exactly as decoded)."""
        directory = Path(directory) if directory is not None else default_dir(name)
        check_name(name)
        if (directory / SESSION_FILE).exists():
            raise InvalidInput(f"a session already exists in {directory}", field="name")
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise InvalidInput(f"{directory} exists and is not an empty directory", field="dir")
        if not directory.parent.is_dir():
            raise InvalidInput(f"directory {directory.parent} does not exist", field="dir")
        image = image.convert("RGB")
        directory.mkdir(exist_ok=True)
        (directory / "steps").mkdir(exist_ok=True)
        step = Step(index=0, parent=None, image="steps/000.png", size=image.size, created=_now(), source=source)
        write_atomic(directory / step.image, imageio.encode_image(image, "png"))
        session = cls(directory, name, 0, [step])
        session._write()
        return session

    @classmethod
    def open(cls, name: str, directory: Path | None = None) -> EditSession:
        directory = Path(directory) if directory is not None else default_dir(name)
        session = cls(directory, name, 0, [])
        session._reload()
        if session.name != name:
            raise InvalidInput(f"{directory} holds session {quote(session.name)}, not {quote(name)}", field="name")
        return session

    def _reload(self) -> None:
        path = self.directory / SESSION_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise InvalidInput(
                f"no session at {self.directory} (start one with: qedit session new)", field="name"
            ) from None
        except (OSError, ValueError) as e:
            raise QeditError(f"cannot read {path}: {e}", field="session") from None
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {quote(data.get('format'))}, expected {FORMAT}")
            self.name = str(data["name"])
            self.steps = [Step.from_json(s) for s in data["steps"]]
            self.head = int(data["head"])
            if not 0 <= self.head < len(self.steps):
                raise ValueError(f"head {self.head} is not a step")
        except (KeyError, TypeError, ValueError) as e:
            raise QeditError(f"{path} is not a qedit session: {e}", field="session") from None

    def _write(self) -> None:
        data = {"format": FORMAT, "name": self.name, "head": self.head, "steps": [s.to_json() for s in self.steps]}
        write_atomic(self.directory / SESSION_FILE, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (POSIX flock; released by the OS if the process dies)."""
        try:
            import fcntl
        except ImportError:  # Windows: single-writer by convention
            self._reload()
            yield
            return
        with open(self.directory / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                self._reload()
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------------

    def step(self, n: int) -> Step:
        if not 0 <= n < len(self.steps):
            raise InvalidInput(f"step must be 0-{len(self.steps) - 1}, got {n}", field="step")
        return self.steps[n]

    def path(self, relative: str) -> Path:
        return self.directory / relative

    def image(self, n: int | None = None) -> Image.Image:
        """A step's pixels (HEAD's by default), fully loaded, RGB."""
        step = self.step(self.head if n is None else n)
        return imageio.load_image(self.path(step.image), field=f"step[{step.index}]")

    def chain(self, n: int | None = None) -> list[Step]:
        """Step 0 ... step ``n`` (HEAD by default), following parents."""
        step = self.step(self.head if n is None else n)
        out = [step]
        while step.parent is not None:
            step = self.steps[step.parent]
            out.append(step)
        return out[::-1]

    def history(self, n: int | None = None) -> tuple[dict[str, Any], ...]:
        """The edits that led to step ``n``, oldest first, in the engine's metadata ``chain`` form."""
        return tuple({"model": s.model, **(s.params or {}), "seed": s.seed} for s in self.chain(n) if s.params)

    # -- changing -----------------------------------------------------------------------------

    def checkout(self, n: int) -> Step:
        """Make step ``n`` HEAD: the next edit starts from it (earlier later steps are kept)."""
        with self._locked():
            step = self.step(n)
            self.head = n
            self._write()
        return step

    def undo(self) -> Step:
        """HEAD = HEAD's parent."""
        with self._locked():
            parent = self.steps[self.head].parent
            if parent is None:
                raise InvalidInput("HEAD is step 0 (the original): nothing to undo", field="step")
            self.head = parent
            self._write()
        return self.steps[parent]

    def append(
        self,
        images: Sequence[tuple[Image.Image, int, dict[str, str]]],
        *,
        parent: int,
        params: EditParams,
        model: str,
        mask: Image.Image | None = None,
    ) -> list[Step]:
        """Record one edit's outputs (image, seed used, metadata) as children of ``parent``.

        HEAD moves to the first; the others are siblings to ``checkout``. Images are written before
        ``session.json``, so the session never names a file that is not complete.
        """
        if not images:
            raise ValueError("append needs at least one image")
        with self._locked():
            self.step(parent)
            first = len(self.steps)
            mask_name = None
            if mask is not None:
                (self.directory / "masks").mkdir(exist_ok=True)
                mask_name = f"masks/{first:03d}.png"
                write_atomic(self.path(mask_name), imageio.encode_image(mask.convert("L"), "png"))
            (self.directory / "steps").mkdir(exist_ok=True)
            new = []
            for k, (image, seed, metadata) in enumerate(images):
                index = first + k
                step = Step(
                    index=index,
                    parent=parent,
                    image=f"steps/{index:03d}.png",
                    size=image.size,
                    created=_now(),
                    params=params.model_dump(mode="json"),
                    model=model,
                    seed=seed,
                    mask=mask_name,
                )
                write_atomic(self.path(step.image), imageio.encode_image(image.convert("RGB"), "png", metadata))
                new.append(step)
            self.steps.extend(new)
            self.head = first
            self._write()
        return new

    def export(self, out_dir: Path) -> list[Path]:
        """The chain step 0 -> HEAD as ``000.png``, ``001.png``, ... plus ``steps.json``.

        Built in a hidden sibling directory and renamed into place, so ``out_dir`` appears complete
        or not at all. Image files are copied byte for byte (their embedded metadata included).
        """
        out_dir = Path(out_dir)
        if not out_dir.parent.is_dir():
            raise InvalidInput(f"directory {out_dir.parent} does not exist", field="out_dir")
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise InvalidInput(f"{out_dir} exists and is not an empty directory", field="out_dir")
        self._reload()
        chain = self.chain()
        tmp = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(4)}.tmp")
        tmp.mkdir()
        try:
            records = []
            for pos, step in enumerate(chain):
                name = f"{pos:03d}.png"
                shutil.copyfile(self.path(step.image), tmp / name)
                record = {"position": pos, **step.to_json(), "image": name}
                if step.mask is not None:
                    record["mask"] = f"{pos:03d}-mask.png"
                    shutil.copyfile(self.path(step.mask), tmp / record["mask"])
                records.append(record)
            doc = {"session": self.name, "head": self.head, "steps": records}
            (tmp / "steps.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            if out_dir.exists():
                out_dir.rmdir()
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return [out_dir / f"{pos:03d}.png" for pos in range(len(chain))]


def edit(
    session: EditSession,
    engine: EditEngine,
    params: EditParams,
    mask: Image.Image | None = None,
    *,
    on_step: StepCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Step]:
    """Edit HEAD's image and record the result(s) as new step(s) after HEAD.

    The request is checked against HEAD's image (``check_request``: boxes inside it, a mask that
    leaves something to edit, not a mask and ``box_mask`` together) before the engine runs.
    Afterwards the pixels the mask keeps are copied from HEAD once more: the engine already
    composites, but the session's promise (untouched pixels = step 0's, over any number of rounds)
    should not depend on every engine honouring that, and the copy is a no-op when it does.
    """
    base_index = session.head
    base_step = session.step(base_index)
    base = session.image(base_index)
    check_request(params, (base.size,), max_images=engine.max_images, model=engine.model_id, mask=mask)
    region = masks.boxes_mask(base.size, params.boxes) if params.box_mask else mask
    edit_mask = None
    if region is not None:
        edit_mask = masks.prepare_edit_mask(region, base.size, params.mask_grow, params.mask_feather)
    request = EditRequest(
        params=params,
        images=(base,),
        mask=mask,
        parent=str(session.path(base_step.image)),
        history=session.history(base_index),
    )
    result = engine.edit(request, on_step=on_step, cancel=cancel)
    outputs = []
    for out in result.outputs:
        image = out.image
        if edit_mask is not None and image.size == base.size:
            image = masks.restore_kept(base, image, edit_mask)
        outputs.append((image, out.seed, out.metadata))
    return session.append(outputs, parent=base_index, params=params, model=result.model, mask=mask)


def summary(step: Step) -> str:
    """One line for ``qedit session log``: what the step asked for and how it was confined."""
    if step.params is None:
        return f"original{f'  {step.source}' if step.source else ''}  {step.size[0]}x{step.size[1]}"
    p = step.params
    parts = [json.dumps(p.get("prompt", ""), ensure_ascii=False)]
    if step.mask:
        parts.append(f"mask {step.mask}")
    if p.get("boxes"):
        parts.append(f"{len(p['boxes'])} box(es){' as mask' if p.get('box_mask') else ''}")
    if step.mask or p.get("box_mask"):
        parts.append(f"grow {p.get('mask_grow', 0)} feather {p.get('mask_feather', 0)}")
    if p.get("strength", 1.0) != 1.0:
        parts.append(f"strength {p['strength']:g}")
    if p.get("preserve") == "auto":
        parts.append(f"preserve auto ΔE {p.get('preserve_threshold'):g}")
    parts.append(f"seed {step.seed}")
    parts.append(f"{step.size[0]}x{step.size[1]}")
    if step.model:
        parts.append(step.model)
    return "  ".join(parts)
