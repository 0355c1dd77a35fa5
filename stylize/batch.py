"""One batch: inputs -> painted files, one bad file never stopping the rest.

Video files (recognised by their first bytes, ``core.video.sniff``) are painted whole through
``core.video.paint_video`` beside the images: every frame, its timing and its sound, steadied
(``--stabilize``), into ``<name>.<video format>``, with a second bar counting frames.

Every input ends in exactly one outcome (written, kept because the output exists, or
failed with a reason), and the summary lists the ones that were not written.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core.codec import DECODABLE, InputError
from core.errors import NotAnImage
from core.files import atomic_write
from core.stylizer import Stylizer
from core.video import VideoOptions, VideoProgress, paint_video, sniff

#: Bytes read from each input to tell a video container from an image.
SNIFF_BYTES = 64


@dataclass(frozen=True)
class Options:
    fmt: str = "png"
    quality: int = 92
    max_side: int | None = None
    strength: float = 1.0
    preserve_colors: bool = False
    tile: bool | None = None
    overwrite: bool = False
    video: VideoOptions = VideoOptions()

    def params(self) -> dict:
        """The same parameters an HTTP request to the server carries."""
        return {
            "format": self.fmt, "quality": self.quality, "max_side": self.max_side, "strength": self.strength,
            "preserve_colors": self.preserve_colors, "tile": self.tile,
        }  # fmt: skip


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, Path]] = field(default_factory=list)  # (input, existing output)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)

    @property
    def exit_code(self) -> int:
        """0: nothing failed (kept outputs are not failures); 1: some input failed."""
        return 1 if self.failed else 0

    def summary(self, total: int, out_dir: Path) -> str:
        counts = f"{len(self.written)} painted, {len(self.failed)} failed"
        if self.kept:
            counts += f", {len(self.kept)} kept"
        lines = [f"{len(self.written)} of {total} written to {out_dir} ({counts})"]
        if self.kept:
            lines.append(f"{len(self.kept)} kept (output exists; pass --overwrite to replace):")
            lines += [f"  {source} -> {existing}" for source, existing in self.kept]
        if self.failed:
            lines.append(f"{len(self.failed)} skipped (could not be painted):")
            lines += [f"  {source}: {reason}" for source, reason in self.failed]
        return "\n".join(lines)


def collect_inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given, plus every visible regular file directly inside given folders; and the
    given paths that cannot be used (missing, or a folder that cannot be listed), each with
    its reason, so the batch reports them and goes on with the rest.

    Nothing is filtered by extension: a file that is not an image is reported as skipped,
    so the user sees it rather than wondering why it was ignored.
    """
    found: list[Path] = []
    unusable: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            unusable.append((path, "missing file (no such file or folder)"))
        elif path.is_dir():
            try:
                found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            except OSError as error:
                unusable.append((path, f"cannot list folder ({error.strerror or error})"))
        else:
            found.append(path)
    return list(dict.fromkeys(found)), unusable


def _unreadable(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "missing file (no such file or folder)"
    return f"cannot read ({error.strerror or error})"


def _refused(error: InputError, data: bytes) -> str:
    """Why the codec refused a file, in a file's words (its messages speak of request bodies)."""
    if not data:
        return "not an image (empty file)"
    if isinstance(error, NotAnImage):
        return f"not an image ({len(data)} bytes in none of the formats read: {', '.join(DECODABLE)})"
    return str(error)


def output_names(
    inputs: list[Path], fmt: str, videos: Collection[Path] = (), video_fmt: str = "mp4"
) -> dict[Path, str]:
    """``photo.jpg`` -> ``photo.png`` (``clip.mov`` -> ``clip.mp4`` for the ``videos``); inputs
    sharing a stem keep their suffix apart (``a.jpg`` and ``a.png`` -> ``a_jpg.png`` and
    ``a_png.png``) so none overwrites another."""
    extension = "jpg" if fmt == "jpeg" else fmt
    stems = Counter(path.stem for path in inputs)
    names = {}
    for path in inputs:
        stem = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.') or 'noext'}"
        names[path] = f"{stem}.{video_fmt if path in videos else extension}"
    return names


def find_videos(inputs: list[Path]) -> set[Path]:
    """The inputs whose first bytes open a video container (unreadable ones are left to fail
    with the images, which say why)."""
    videos = set()
    for path in inputs:
        try:
            with path.open("rb") as file:
                if sniff(file.read(SNIFF_BYTES)):
                    videos.add(path)
        except OSError:
            continue
    return videos


def run_batch(
    inputs: list[Path], out_dir: Path, stylizer: Stylizer, options: Options, progress: bool | None = None
) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    videos = find_videos(inputs)
    names = output_names(inputs, options.fmt, videos, options.video.output)
    # progress None: a bar only on a terminal (tqdm's own rule), so logs stay readable.
    disable = None if progress is None else not progress
    bar = tqdm(inputs, desc="stylize", unit="file" if videos else "img", disable=disable)
    for source in bar:
        target = out_dir / names[source]
        if target.exists() and not options.overwrite:
            report.kept.append((source, target))
            continue
        if source in videos:
            reason = _paint_video(source, target, stylizer, options, disable)
        else:
            reason = _paint_one(source, target, stylizer, options)
        if reason is None:
            report.written.append(target)
        else:
            report.failed.append((source, reason))
            tqdm.write(f"{source}: {reason}", file=sys.stderr)  # now, not only in the summary
    return report


def _paint_video(source: Path, target: Path, stylizer: Stylizer, options: Options, disable: bool | None) -> str | None:
    """Paints one video file into ``target`` with a bar in frames (and its ETA); None when
    written, else why not. ``paint_video`` leaves no partial file on any failure."""
    params = options.params()
    bar = tqdm(desc=source.name, unit="frame", leave=False, disable=disable)

    def paint(frames: list) -> list:
        return stylizer.paint(frames, [params] * len(frames))

    def progress(done: VideoProgress) -> None:
        bar.total = done.frames_total
        bar.update(done.frames_done - bar.n)

    try:
        result = paint_video(source, target, paint, options.video, progress)
    except InputError as error:
        return f"not a usable video ({error})"
    except OSError as error:  # the file vanished, or the output folder cannot be written
        return f"cannot read {source} or write {target} ({error.strerror or error})"
    except Exception as error:  # noqa: BLE001 - one bad video must not end the batch
        return f"not a usable video ({type(error).__name__}: {error})"
    finally:
        bar.close()
    if result.audio.startswith("re-encoded"):
        tqdm.write(f"{source}: audio {result.audio}", file=sys.stderr)
    return None


def _paint_one(source: Path, target: Path, stylizer: Stylizer, options: Options) -> str | None:
    """Paints one file into ``target``; None when written, else why not."""
    try:
        data = source.read_bytes()
    except OSError as error:
        return _unreadable(error)
    try:
        painted = stylizer.stylize_bytes(data, options.params())
    except InputError as error:
        return _refused(error, data)
    except Exception as error:  # noqa: BLE001 - one bad image must not end the batch
        return f"not a usable image ({type(error).__name__}: {error})"
    try:
        atomic_write(target, painted)  # a crash never leaves half an image under the final name
    except OSError as error:
        return f"cannot write {target} ({error.strerror or error})"
    return None
