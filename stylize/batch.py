"""One batch: inputs -> painted files, one bad file never stopping the rest.

Every input ends in exactly one outcome (written, kept because the output exists, or
failed with a reason), and the summary lists the ones that were not written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core.codec import InputError
from core.files import atomic_write
from core.stylizer import Stylizer


@dataclass(frozen=True)
class Options:
    fmt: str = "png"
    quality: int = 92
    max_side: int | None = None
    strength: float = 1.0
    preserve_colors: bool = False
    tile: bool | None = None
    overwrite: bool = False

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
        lines = [f"{len(self.written)} of {total} written to {out_dir}"]
        if self.kept:
            lines.append(f"{len(self.kept)} kept (output exists; pass --overwrite to replace):")
            lines += [f"  {source} -> {existing}" for source, existing in self.kept]
        if self.failed:
            lines.append(f"{len(self.failed)} skipped (could not be painted):")
            lines += [f"  {source}: {reason}" for source, reason in self.failed]
        return "\n".join(lines)


def collect_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, plus every visible regular file directly inside given folders.

    Nothing is filtered by extension: a file that is not an image is reported as skipped,
    so the user sees it rather than wondering why it was ignored.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def output_names(inputs: list[Path], fmt: str) -> dict[Path, str]:
    """``photo.jpg`` -> ``photo.png``; inputs sharing a stem keep their suffix apart
    (``a.jpg`` and ``a.png`` -> ``a_jpg.png`` and ``a_png.png``) so none overwrites another."""
    extension = "jpg" if fmt == "jpeg" else fmt
    stems = Counter(path.stem for path in inputs)
    names = {}
    for path in inputs:
        stem = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.') or 'noext'}"
        names[path] = f"{stem}.{extension}"
    return names


def run_batch(
    inputs: list[Path], out_dir: Path, stylizer: Stylizer, options: Options, progress: bool | None = None
) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    names = output_names(inputs, options.fmt)
    # progress None: a bar only on a terminal (tqdm's own rule), so logs stay readable.
    bar = tqdm(inputs, desc="stylize", unit="img", disable=None if progress is None else not progress)
    for source in bar:
        target = out_dir / names[source]
        if target.exists() and not options.overwrite:
            report.kept.append((source, target))
            continue
        try:
            data = source.read_bytes()
        except OSError as error:
            report.failed.append((source, f"cannot read ({error.strerror or error})"))
            continue
        try:
            painted = stylizer.stylize_bytes(data, options.params())
        except InputError as error:
            report.failed.append((source, str(error)))
            continue
        except Exception as error:  # noqa: BLE001 - one bad image must not end the batch
            report.failed.append((source, f"not a usable image ({type(error).__name__}: {error})"))
            continue
        try:
            atomic_write(target, painted)  # a crash never leaves half an image under the final name
        except OSError as error:
            report.failed.append((source, f"cannot write {target} ({error.strerror or error})"))
            continue
        report.written.append(target)
    return report
