"""Images as data: opened as RGB, image-folder layouts, image paths in tables, bad images.

Every image a model sees goes through :func:`open_image`, so grayscale, RGBA, palette, CMYK and
16-bit files, EXIF-rotated phone photos and corrupt files behave the same whether they come from an
image folder, a CSV/JSON table of paths or a Hub dataset. Datasets keep images *undecoded*
(``datasets.Image(decode=False)``: ``{"path", "bytes"}``) and decode them lazily in the transform.

Nothing here imports torch; Pillow and numpy are imported where needed.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".pnm",
})
#: Split folder names recognised under an image-folder root (``val`` and ``valid`` mean validation).
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val", "valid"),
                 "test": ("test",)}
SKIP_HINT = ("replace or delete the file, or set data.skip_bad_images: true to skip unreadable "
             "images")
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


# -- one image --------------------------------------------------------------------------------
def image_name(value: Any, default: str = "<in-memory image>") -> str:
    """A human name for an image value (its path when known), for error messages."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return getattr(value, "filename", None) or default


def open_image(value: Any, *, name: str | None = None):
    """Open an image (path, bytes, ``{"path", "bytes"}`` dict or PIL image) as an RGB PIL image.

    EXIF orientation is applied first. Raises :class:`DataError` naming the file when it cannot be
    read or decoded (missing, truncated, not an image).
    """
    from PIL import Image

    name = name or image_name(value)
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(_bytes_io(value))
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = Image.open(_bytes_io(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = _open_path_or_remote(value)
        else:
            raise ValueError(f"no image data in {type(value).__name__} value")
        image.load()  # decode now: truncated files fail here, not inside a dataloader worker
        return to_rgb(image)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many exception types for bad files
        raise DataError(f"cannot read image: {exc}", file=name, hint=SKIP_HINT) from exc


def _bytes_io(data: bytes):
    from io import BytesIO

    return BytesIO(data)


def _open_path_or_remote(value: dict):
    from PIL import Image

    path = value["path"]
    if os.path.exists(path) or "://" not in path:
        return Image.open(path)
    import datasets  # remote (hf://, https://) path: let datasets fetch it with its auth handling

    return datasets.Image().decode_example(value)


def to_rgb(image):
    """Convert any PIL image to 8-bit RGB with EXIF orientation applied.

    - grayscale, bilevel, CMYK, YCbCr, LAB, HSV: ``convert("RGB")``;
    - 16-bit and 32-bit integer images are scaled down to 8 bits (``/257``) instead of clipped;
      float images are taken as 0..1 when their maximum is at most 1, else as 0..255;
    - transparency (RGBA, LA, palette with a transparent colour) is composited onto white, so
      transparent areas do not turn into whatever colour their hidden RGB happens to hold.
    """
    from PIL import Image, ImageOps

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF block: keep the pixels as stored
        pass
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_l(image):
    """16/32-bit integer or float single-channel image -> 8-bit grayscale ("L")."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
    elif image.mode.startswith("I;16") or (array.size and array.max() > 255):
        scale = 1 / 257  # 65535 -> 255
    else:
        scale = 1.0  # 32-bit container holding 8-bit values
    array = np.clip(np.nan_to_num(array * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(array)  # 2-D uint8 -> mode "L"


# -- image folders ----------------------------------------------------------------------------
def split_folders(root: Path) -> dict[str, Path]:
    """``{"train": root/train, "validation": root/val, ...}`` when ``root`` holds split folders."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for folder in names:
            if (Path(root) / folder).is_dir():
                found[split] = Path(root) / folder
                break
    return found if "train" in found else {}


def _label_dirs(folder: Path) -> list[Path]:
    return [p for p in sorted(Path(folder).iterdir()) if p.is_dir() and not p.name.startswith(".")]


def _iter_image_files(folder: Path) -> Iterator[str]:
    """Image files under ``folder`` (any depth, in directory order), listed with ``os.scandir``:
    a folder's entries come with their types, so no file is stat-ed. Symlinked files count;
    symlinked folders are not followed (like ``Path.rglob``); hidden files and folders
    (``.ipynb_checkpoints``) are left out."""
    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    continue
                dot = name.rfind(".")  # the extension first: most entries are image files
                if dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    yield entry.path
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)


def image_files(folder: Path) -> list[str]:
    """Image files under ``folder`` (training folders and ``predict --input``), sorted as
    ``Path`` objects sort (by path components; files all in one folder sort the same as plain
    strings, which is cheaper)."""
    found = list(_iter_image_files(folder))
    prefix = len(str(folder)) + 1
    if any(os.sep in path[prefix:] for path in found):
        return sorted(found, key=lambda path: path.split(os.sep))
    return sorted(found)


def check_label_folders(folder: Path, split: str = "train") -> None:
    """The errors of :func:`scan_label_folders`, found without listing every file (it stops at
    the first image): what ``sft-hub validate`` and the recipe check before loading ask."""
    _label_folders(folder, split, first_only=True)


def scan_label_folders(folder: Path, split: str = "train") -> tuple[list[str], list[str]]:
    """``(image paths, label names)`` for ``folder/<label>/**/<image>``, sorted for determinism.

    Non-image files (README, .DS_Store, ...) are ignored. A folder of split folders (``train/``,
    ``test/``) or one without images is a :class:`DataError` saying how to point at it.
    """
    return _label_folders(folder, split, first_only=False)


def _label_folders(folder: Path, split: str, *, first_only: bool) -> tuple[list[str], list[str]]:
    folder = Path(folder)
    field_name = f"data.files.{split}"
    if not folder.is_dir():
        raise DataError("image folder not found", file=str(folder), field=field_name,
                        hint="point data.files at a folder laid out as <label>/<image files>")
    splits = split_folders(folder)
    if splits:
        per_split = ", ".join(f"{s}: {p}" for s, p in splits.items())
        names = ", ".join(p.name for p in splits.values())
        raise DataError(f"this folder holds split folders ({names}), not label folders",
                        file=str(folder), field=field_name,
                        hint=f"give one folder per split in data.files ({per_split})")
    paths: list[str] = []
    labels: list[str] = []
    for label_dir in _label_dirs(folder):
        if first_only:
            found = list(itertools.islice(_iter_image_files(label_dir), 1))
        else:
            found = image_files(label_dir.resolve())  # resolved once per folder, not per file
        paths += found
        labels += [label_dir.name] * len(found)
        if first_only and paths:
            break
    if not paths:
        raise DataError("no images found in <label>/ subfolders", file=str(folder),
                        field=field_name,
                        hint="lay the folder out as <label>/<image files> (e.g. cat/001.jpg); "
                        f"recognised extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return paths, labels


def read_image_folder(files: list[str], spec: Any):
    """The ``imagefolder`` reader of :data:`sft_hub.data.sources.READERS`: one split's folders as
    a dataset of image paths (``spec.image_column``) and folder-name labels
    (``spec.label_column``)."""
    from datasets import Dataset

    paths: list[str] = []
    labels: list[str] = []
    for folder in files:
        found, names = scan_label_folders(Path(folder))
        paths += found
        labels += names
    return Dataset.from_dict({getattr(spec, "image_column", "image"): paths,
                              getattr(spec, "label_column", "label"): labels})


# -- image paths in tables --------------------------------------------------------------------
def resolve_image_path(value: Any, base_dir: Path) -> Any:
    """An image path from a CSV/JSON cell, made absolute relative to the table's own folder.

    Absolute paths and URLs are kept; non-string values (already-encoded images) pass through.
    """
    if not isinstance(value, str) or not value:
        return value
    if "://" in value or os.path.isabs(value):
        return value
    return str((Path(base_dir) / value).resolve())


# -- checking every image once ----------------------------------------------------------------
@dataclass
class BadImages:
    """Images that could not be read, per split (reported in run_info.json's ``notes``)."""

    by_split: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_split.values())

    def add(self, split: str, name: str, reason: str) -> None:
        self.by_split.setdefault(split, []).append((name, reason))

    def summary(self, limit: int = 5) -> str:
        parts = []
        for split, items in self.by_split.items():
            names = ", ".join("/".join(Path(n).parts[-2:]) for n, _ in items[:limit])
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{split}: {len(items)} ({names}{more})")
        return f"skipped {self.count} unreadable image(s): " + "; ".join(parts)


def find_bad_images(values: Iterable[Any], *, split: str, skip: bool,
                    bad: BadImages | None = None, progress: bool = True) -> list[int]:
    """Check every image file's header (:func:`check_image_header`: no pixels are decoded, so this
    costs a file open and a small read per image); return the indices of unreadable ones.

    With ``skip=False`` the first unreadable image raises a :class:`DataError` naming the file (so a
    missing, empty or non-image file fails the run before training, not hours into it); with
    ``skip=True`` each one is recorded in ``bad``. A file whose header is sound but whose pixels do
    not decode (a truncated download) is found when training first reads it, with the same error
    (or skipped and counted): :class:`ImageProblems`.
    """
    from huggingface_hub.utils import tqdm  # off where sft_hub.console switches bars off

    indices = []
    total = len(values) if hasattr(values, "__len__") else None
    shown = tqdm(values, total=total, desc=f"checking {split} images", unit="image", leave=False,
                 disable=not progress)
    for i, value in enumerate(shown):
        try:
            check_image_header(value, name=image_name(value, default=f"{split} row {i}"))
        except DataError as exc:
            if not skip:
                raise
            indices.append(i)
            if bad is not None:
                bad.add(split, exc.file or f"{split} row {i}", exc.message)
    return indices


class BackgroundHeaderCheck:
    """:func:`find_bad_images` over one split in a background thread running beside training,
    so that the time to the first step does not grow with the data set.

    :class:`ImageProblems` starts it (:meth:`start`) when the second batch arrives, once the first
    step is done: a Python thread reading headers holds the interpreter lock for most of its work
    and would otherwise slow down building the model and the first step (20,000 files: by about
    0.5 s on 2 cores); training steps run in torch kernels without the lock. The first unreadable
    file it finds is kept (``problem``) and raised on the main process by
    :meth:`ImageProblems.take` at the next batch: the up-front check's file-naming error, seconds
    into training instead of before it (a file training reads first fails with that error anyway).
    ``values``: the image paths, or a callable returning them (read in the thread, so that
    reading the column is beside training too).
    """

    def __init__(self, values: Any, split: str):
        import threading

        self.split, self.problem = split, None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(values,), daemon=True,
                                        name=f"sft-hub header check ({split})")

    def start(self) -> None:
        if not self._thread.is_alive() and not self.done.is_set():
            self._thread.start()

    def _run(self, values: Any) -> None:
        try:
            find_bad_images(values() if callable(values) else values, split=self.split,
                            skip=False, progress=False)
        except DataError as exc:
            self.problem = exc
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


# -- headers: checking without decoding ----------------------------------------------------------
#: Leading bytes of common formats; anything else is identified by Pillow (header only).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))
_HEADER_BYTES = 32


def _header_problem(head: bytes) -> str | None:
    """Why these leading bytes cannot start a readable image (None: they can, or the format is
    not one :data:`_SIGNATURES` knows)."""
    if not head:
        return "the file is empty"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[8:16] != b"\x00\x00\x00\rIHDR":
            return "PNG signature without an IHDR header chunk"
        if int.from_bytes(head[16:20], "big") == 0 or int.from_bytes(head[20:24], "big") == 0:
            return "PNG header gives a zero width or height"
    return None


def _known_signature(head: bytes) -> bool:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(sig) for sig, _ in _SIGNATURES)


def check_image_header(value: Any, *, name: str | None = None) -> None:
    """Raise the same :class:`DataError` as :func:`open_image` when ``value`` cannot be an image,
    reading only its header: a missing or empty file, or one that is no image format. Known
    formats (PNG, JPEG, GIF, TIFF, BMP, WebP) are recognised by their leading bytes; others are
    identified by Pillow without decoding pixels. Embedded bytes and in-memory images are left to
    the first read (reading them here would cost as much as the data)."""
    path = None
    if isinstance(value, (str, os.PathLike)):
        path = value
    elif isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        path = value["path"]
    if path is None or "://" in str(path):
        return
    name = name or str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_BYTES)
        problem = _header_problem(head)
        if problem is None and not _known_signature(head):
            from PIL import Image

            with Image.open(path):  # identifies the format from its header; decodes nothing
                pass
    except Exception as exc:
        raise DataError(f"cannot read image: {exc}", file=name, hint=SKIP_HINT) from exc
    if problem is not None:
        raise DataError(f"cannot read image: {problem}", file=name, hint=SKIP_HINT)


# -- images that fail when training reads them -----------------------------------------------------
class ImageProblems:
    """Images that passed the header check but failed to decode when training read them.

    The batch transform (which may run in a DataLoader worker) cannot raise a clean error or count
    anything the main process sees, so it hands each failure back with the batch
    (``bad_images``: ``(split, file, message)``); the Trainer hands the batch to
    :meth:`take` on the main process, which raises the same :class:`DataError` as the header check
    or, with ``skip``, counts the image once (``bad``) and keeps the run's note up to date.
    """

    key = "bad_images"

    def __init__(self, bad: BadImages, *, skip: bool, notes: list[str],
                 checks: Iterable[BackgroundHeaderCheck] = ()):
        self.bad, self.skip, self.notes = bad, skip, notes
        self.checks = list(checks)  # header checks run beside training (started at batch 2)
        self._seen: set[tuple[str, str]] = set()
        self._batches = 0

    def take(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._batches += 1
        for check in self.checks:
            if check.problem is not None:  # found while earlier batches trained
                raise check.problem
            if self._batches == 2:  # the first step is done
                check.start()
        problems = batch.pop(self.key, None) or []
        for split, file, message in problems:
            if not self.skip:
                raise DataError(message, file=file, hint=SKIP_HINT)
            if (split, file) in self._seen:
                continue  # met again in a later epoch: counted once
            self._seen.add((split, file))
            before = self.bad.summary() if self.bad.count else None
            self.bad.add(split, file, message)
            import logging

            logging.getLogger(__name__).warning("skipping unreadable image %s: %s", file, message)
            if before in self.notes:
                self.notes[self.notes.index(before)] = self.bad.summary()
            else:
                self.notes.append(self.bad.summary())
        if problems and "pixel_values" not in batch:
            raise DataError(f"every image of a {problems[0][0]} batch is unreadable (first: "
                            f"{problems[0][1]})", file=problems[0][1], hint=SKIP_HINT)
        return batch
