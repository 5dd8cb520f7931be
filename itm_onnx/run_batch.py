"""The batch job behind ``itm-onnx run``: files in, HDR files (and a page) out.

:mod:`itm_onnx.runner` holds what one image needs (:class:`~itm_onnx.runner.Runner`);
this module walks folders, names outputs, writes every format atomically, removes an
input's other files when one of its formats fails, and reports per file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .data.images import (
    DEFAULT_MAX_PIXELS,
    HEIF_SUFFIXES,
    ImageError,
    heif_available,
    load_ldr,
    save_png8,
)
from .display import (
    BROWSER_IMAGE_SUFFIXES,
    DEFAULT_PEAK_NITS,
    DISPLAY_FORMATS,
    PageEntry,
    check_encoders,
    check_peak_nits,
    write_page,
)
from .errors import ItmOnnxError, UsageError
from .runner import (
    DEFAULT_MAX_TILE_PIXELS,
    FORMATS,
    LINEAR_FORMATS,
    TILE_OVERLAP_FRACTION,
    Runner,
)
from .utils.progress import track

# --- the batch job: itm-onnx run --------------------------------------------------------


@dataclass
class RunConfig:
    """What ``itm-onnx run`` does; the defaults are the CLI's."""

    model: Path = Path("mqnet.onnx")
    inputs: tuple[Path, ...] = ()  # image files and/or folders (not recursive)
    output_dir: Path = Path("hdr")
    # Subset of FORMATS; None: png16, plus exr when the model's encoding is known.
    formats: tuple[str, ...] | None = None
    providers: tuple[str, ...] = ("cpu",)
    threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard, checked before decoding
    overlap_fraction: float = TILE_OVERLAP_FRACTION
    max_tile_pixels: int = DEFAULT_MAX_TILE_PIXELS  # dynamic models: tile photos above this
    peak_nits: float = DEFAULT_PEAK_NITS  # display formats: highlights roll off to this
    html: Path | None = None  # before/after page of every input beside its display outputs


@dataclass
class FileResult:
    input: str
    outputs: list[str]
    width: int
    height: int
    fit: str  # "as is", "padded to WxH" or "N tiles of WxH"
    notes: list[str]
    seconds: float


@dataclass
class FileFailure:
    input: str
    error: str


@dataclass
class RunReport:
    model: dict[str, Any]
    formats: list[str]
    output_dir: str
    done: list[FileResult] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # folder entries without an image suffix
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    html: str | None = None  # the before/after page, when one was asked for

    @property
    def exit_code(self) -> int:
        """0: every input converted; 1: none; 3: some (the failures are listed)."""
        if not self.failed:
            return 0
        return 3 if self.done else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


def choose_formats(requested: Sequence[str] | None, encoding: str | None) -> list[str]:
    """Validate the requested formats against what the model's output can give."""
    if requested is None:
        return ["png16", "exr"] if encoding else ["png16"]
    formats = []
    for name in requested:
        name = name.strip().lower()
        if name not in FORMATS:
            raise UsageError(f"unknown output format {name!r}; choose from {', '.join(FORMATS)}")
        if name in LINEAR_FORMATS and encoding is None:
            raise UsageError(
                f"format {name!r} needs linear radiance, but the model's output encoding is "
                "unknown; use png16"
            )
        if name not in formats:
            formats.append(name)
    if not formats:
        raise UsageError(f"no output format given; choose from {', '.join(FORMATS)}")
    return formats


def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow can decode, and HEIF's: what a folder is scanned for.

    HEIF's are always in, so that a folder of iPhone photos without the optional reader
    fails per file with the install hint instead of being skipped in silence.
    """
    heif_available()  # registers the HEIF suffixes with Pillow when pillow-heif is there
    return frozenset(Image.registered_extensions()) | HEIF_SUFFIXES


def collect_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """(files to convert, folder entries ignored). Named files are always tried; folders
    contribute their non-hidden files with an image suffix, sorted, not recursively."""
    if not inputs:
        raise UsageError("no input images given")
    suffixes = image_suffixes()
    files: list[Path] = []
    ignored: list[str] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            (files if entry.suffix.lower() in suffixes else ignored).append(entry)
    if not files:
        raise UsageError(
            f"no image files in {', '.join(map(str, inputs))}"
            + (f" ({len(ignored)} other files ignored)" if ignored else "")
        )
    return files, [str(p) for p in ignored]


def output_paths(source: Path, output_dir: Path, formats: Sequence[str]) -> list[Path]:
    return [output_dir / (source.stem + FORMATS[name]) for name in formats]


def run_model(config: RunConfig, log: Callable[[str], None] = lambda _: None) -> RunReport:
    """Convert every input; one file's failure is recorded, never fatal to the batch."""
    started = time.perf_counter()
    peak_nits = check_peak_nits(config.peak_nits)
    files, ignored = collect_inputs(config.inputs)
    runner = Runner(config.model, config.providers, config.threads, config.overlap_fraction,
                    max_tile_pixels=config.max_tile_pixels)
    formats = choose_formats(config.formats, runner.encoding)
    check_encoders(formats)  # a missing encoder fails before any file is written
    output_dir = Path(config.output_dir)
    ensure_writable_folder(output_dir, "output folder")
    if config.html is not None:
        ensure_writable_folder(Path(config.html).parent, "folder of the --html page")
    report = RunReport(model=runner.describe(), formats=formats, output_dir=str(output_dir),
                       ignored=ignored, notices=list(runner.notices))
    for notice in runner.notices:
        log(f"note: {notice}")
    claimed: dict[Path, Path] = {}
    page: list[PageEntry] = []
    for index, source in enumerate(track(files, "run", total=len(files), unit="image"), 1):
        prefix = f"[{index}/{len(files)}] {source}"
        try:
            result = _convert_one(runner, source, output_dir, formats, config.max_pixels,
                                  claimed, peak_nits, page if config.html else None)
        except (ImageError, ItmOnnxError, OSError) as exc:
            message = _failure_message(exc, source)
            report.failed.append(FileFailure(str(source), message))
            log(f"{prefix}: FAILED: {message}")
            continue
        report.done.append(result)
        log(f"{prefix} {result.width}x{result.height} ({result.fit}) -> "
            f"{', '.join(Path(p).name for p in result.outputs)} ({result.seconds:.2f} s)")
    if config.html is not None and page:  # no page of nothing when every input failed
        report.html = str(write_page(config.html, page, peak_nits))
        log(f"page: {config.html} ({len(page)} inputs)")
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def ensure_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove it takes a file, or raise one UsageError line.

    Tried with a real file rather than ``os.access``, which says yes to root on a
    read-only mount; so an unwritable folder fails before any work, not file by file.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".itm-onnx-probe-")
        probe.close()
    except OSError as exc:
        raise UsageError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from None


def _failure_message(exc: BaseException, source: Path) -> str:
    if isinstance(exc, ImageError):
        return " ".join(str(exc.reason).split())
    if isinstance(exc, OSError):
        return f"cannot write output: {exc.strerror or exc}"
    return str(exc).removeprefix(f"{source}: ")


def _convert_one(runner: Runner, source: Path, output_dir: Path, formats: Sequence[str],
                 max_pixels: int, claimed: dict[Path, Path], peak_nits: float,
                 page: list[PageEntry] | None) -> FileResult:
    started = time.perf_counter()
    targets = output_paths(source, output_dir, formats)
    _claim_outputs(source, targets, claimed)
    image = load_ldr(source, max_pixels=max_pixels)
    height, width = image.rgb.shape[:2]
    y = runner.predict(image.rgb)
    linear = runner.to_linear(y) if LINEAR_FORMATS.intersection(formats) else None
    written: list[Path] = []
    try:
        for name, target in zip(formats, targets, strict=True):
            runner.write(target, y, name, image.rgb, peak_nits=peak_nits, linear=linear)
            written.append(target)
    except BaseException:
        for target in written:  # all of an input's formats or none of them
            target.unlink(missing_ok=True)
        raise
    claimed.update((target.resolve(), source) for target in targets)
    if page is not None:
        shown = source
        if source.suffix.lower() not in BROWSER_IMAGE_SUFFIXES:  # e.g. TIFF: a PNG preview
            shown = output_dir / f"{source.stem}.input.png"
            save_png8(shown, image.rgb)
        page.append(PageEntry(source.name, shown, width, height,
                              [(n, t) for n, t in zip(formats, targets, strict=True)
                               if n in DISPLAY_FORMATS]))
    return FileResult(
        input=str(source), outputs=[str(t) for t in targets], width=width, height=height,
        fit=runner.geometry.describe(height, width), notes=image.notes,
        seconds=round(time.perf_counter() - started, 3),
    )


def _claim_outputs(source: Path, targets: list[Path], claimed: dict[Path, Path]) -> None:
    """Refuse to overwrite an input, or the output of an earlier input of this run
    (``a/x.png`` and ``b/x.jpg`` both map to ``x.png``). Only converted inputs hold
    their names, so a broken file never blocks a good one."""
    for target in targets:
        key = target.resolve()
        if key == source.resolve():
            raise ItmOnnxError(f"output {target} would overwrite the input; choose another "
                               "output folder")
        if key in claimed:
            raise ItmOnnxError(f"output {target.name} is already taken by {claimed[key]} "
                               "(same file name); rename one of them")
