"""ONNX Runtime's ARM64 CPU kernels on an x86 machine, under QEMU user-mode emulation.

Phones run ONNX Runtime's aarch64 build, whose int8 and float kernels (NEON, dot-product
instructions) are not the x86 ones the rest of the toolkit measures. With
``qemu-aarch64-static`` the official aarch64 manylinux wheels run here, unchanged, so
their numbers can be compared with the host's: parity, not latency (emulated time says
nothing about a phone). See ``shared/docs/measurements.md``.

The environment (``setup_env``, once, needs network; ``find_env`` afterwards, offline):

- an arm64 Debian userland with Python 3.11 (Debian 12 "bookworm" packages, matching the
  cp311 wheels): ``apt-get install --download-only`` with a *private* apt state (own
  sources list, lists, cache and an empty dpkg status, arm64 as the only architecture),
  so the host's apt and dpkg configuration are never touched and the full dependency
  closure is resolved by apt itself; each ``.deb`` is unpacked with ``dpkg -x``;
- the aarch64 wheels of the host's onnxruntime and numpy versions (plus protobuf,
  flatbuffers, packaging) from ``pip download --only-binary=:all: --platform
  manylinux_2_28_aarch64``, unzipped into a ``site`` folder put on ``sys.path``;
- an ARM ``/proc/cpuinfo`` (Neoverse-N1). ONNX Runtime's CPU-feature probe parses
  ``/proc/cpuinfo`` and segfaults on the host's x86 one; each run therefore happens in a
  private mount namespace (``unshare --mount``) with that file bind-mounted over
  ``/proc/cpuinfo``, with ``QEMU_CPU=neoverse-n1`` so the emulated CPU matches it.

``run_parity`` then runs the same small script (:data:`RUNNER`) with the same session
settings on the host's Python and under emulation, and compares the outputs on the
10-bit scale the network's output is stored at (``round(y * 1023)``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ItmOnnxError, UsageError

QEMU = "qemu-aarch64-static"
PYTHON = "usr/bin/python3.11"
# The arm64 packages whose dependency closure makes a Python 3.11 that can import numpy
# and onnxruntime (libstdc++6 for onnxruntime's C++ runtime).
DEB_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
# Wheels: onnxruntime and numpy at the host's versions (see Arm64EnvConfig), plus these.
EXTRA_WHEELS = ("protobuf", "flatbuffers", "packaging")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
MANIFEST = "manifest.json"
ENV_FORMAT = 1

# Neoverse-N1 (implementer 0x41 = Arm, part 0xd0c), with the dot-product extension
# (asimddp) that selects ORT's int8 kernels on modern phones.
CPU_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                "asimdrdm lrcpc dcpop asimddp ssbs")
CPUINFO_BLOCK = """processor\t: {index}
BogoMIPS\t: 50.00
Features\t: """ + CPU_FEATURES + """
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""

INSTALL_QEMU = "apt-get install qemu-user-static"


class Arm64EnvError(ItmOnnxError):
    """The emulated environment is missing, stale or cannot run (one line: what to do)."""


def default_env_dir() -> Path:
    """``$ITM_ONNX_CACHE/arm64``, else ``$XDG_CACHE_HOME/itm-onnx/arm64`` or ~/.cache."""
    if os.environ.get("ITM_ONNX_CACHE"):
        return Path(os.environ["ITM_ONNX_CACHE"]) / "arm64"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "itm-onnx" / "arm64"


def _host_version(module: str) -> str:
    return __import__(module).__version__


@dataclass
class Arm64EnvConfig:
    """Where the emulated environment lives and what goes into it."""

    env_dir: Path = field(default_factory=default_env_dir)
    # Debian release with an arm64 python3.11 (the wheels are cp311), whatever the host runs.
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    keyring: Path = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    # Parity means: the same ONNX Runtime release, another architecture.
    onnxruntime_version: str = field(default_factory=lambda: _host_version("onnxruntime"))
    numpy_version: str = field(default_factory=lambda: _host_version("numpy"))
    cpu: str = "neoverse-n1"


@dataclass
class Arm64Env:
    """A ready environment: the arm64 root, the unpacked wheels and the ARM cpuinfo."""

    path: Path
    manifest: dict[str, Any]
    cpu: str = "neoverse-n1"

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def site(self) -> Path:
        return self.path / "site"

    @property
    def cpuinfo(self) -> Path:
        return self.path / "cpuinfo"

    def python_command(self, script: Path, *args: str) -> list[str]:
        """The command that runs ``script`` with the arm64 Python under emulation."""
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise _qemu_missing()
        namespace = ["unshare", "--mount"] if os.geteuid() == 0 else [
            "unshare", "--user", "--map-root-user", "--mount"]
        # In the private namespace: put the ARM cpuinfo over /proc/cpuinfo, then exec qemu.
        inner = 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"'
        return [*namespace, "--", "sh", "-c", inner, "sh", str(self.cpuinfo),
                qemu, "-cpu", self.cpu, "-L", str(self.root), str(self.root / PYTHON),
                "-I", str(script), *args]


# --------------------------------------------------------------------------------------
# Host checks and one-line errors
# --------------------------------------------------------------------------------------


def _qemu_missing() -> Arm64EnvError:
    return Arm64EnvError(
        f"{QEMU} not found: install it with `{INSTALL_QEMU}` (Debian/Ubuntu, as root), "
        "then run `itm-onnx validate-arm64 --setup` once (it downloads the ARM64 "
        "environment; later runs reuse it offline)")


def check_host() -> None:
    """Fail with one line when this machine cannot emulate ARM64 at all."""
    if platform.system() != "Linux":
        raise Arm64EnvError("ARM64 emulation needs Linux (QEMU user mode and unshare)")
    if shutil.which(QEMU) is None:
        raise _qemu_missing()
    if shutil.which("unshare") is None:
        raise Arm64EnvError("unshare not found: install util-linux (`apt-get install util-linux`)")


def _manifest_path(config: Arm64EnvConfig) -> Path:
    return Path(config.env_dir) / "env" / MANIFEST


def find_env(config: Arm64EnvConfig | None = None) -> Arm64Env:
    """The ready environment in ``config.env_dir``, or one line saying how to get one."""
    config = config or Arm64EnvConfig()
    check_host()
    manifest_path = _manifest_path(config)
    if not manifest_path.is_file():
        raise Arm64EnvError(
            f"no ARM64 environment in {config.env_dir}: run `itm-onnx validate-arm64 "
            "--setup` once (needs network to Debian's archive and PyPI, about 55 MB; "
            "later runs reuse it offline)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise Arm64EnvError(f"unreadable {manifest_path}: run `itm-onnx validate-arm64 "
                            "--setup` again") from None
    wanted = {"format": ENV_FORMAT, "onnxruntime": config.onnxruntime_version,
              "numpy": config.numpy_version}
    for key, value in wanted.items():
        if manifest.get(key) != value:
            raise Arm64EnvError(
                f"the ARM64 environment in {config.env_dir} has {key} {manifest.get(key)} "
                f"but {value} is wanted (the host's): run `itm-onnx validate-arm64 --setup`")
    env = Arm64Env(path=manifest_path.parent, manifest=manifest, cpu=config.cpu)
    if not (env.root / PYTHON).exists() or not (env.site / "onnxruntime").is_dir():
        raise Arm64EnvError(f"the ARM64 environment in {config.env_dir} is incomplete: run "
                            "`itm-onnx validate-arm64 --setup` again")
    return env


# --------------------------------------------------------------------------------------
# Setup (network, once)
# --------------------------------------------------------------------------------------

Progress = Callable[[str], None]


def setup_env(config: Arm64EnvConfig | None = None, progress: Progress | None = None,
              force: bool = False) -> Arm64Env:
    """Download and unpack the environment into ``config.env_dir`` (reused if current).

    Everything is built in a staging folder and renamed into place at the end, so an
    interrupted setup never leaves a half environment that ``find_env`` would accept.
    """
    config = config or Arm64EnvConfig()
    say = progress or (lambda _message: None)
    check_host()
    if not force:
        try:
            return find_env(config)
        except Arm64EnvError:
            pass
    for tool, package in (("apt-get", "apt"), ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            raise Arm64EnvError(f"the setup needs {tool} (package {package}): it downloads "
                                "Debian's arm64 packages")
    if not Path(config.keyring).is_file():
        raise Arm64EnvError(f"Debian archive keyring {config.keyring} not found: "
                            "`apt-get install debian-archive-keyring`")
    env_dir = Path(config.env_dir)
    env_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=env_dir) as stage_name:
        stage = Path(stage_name)
        target = stage / "env"
        say(f"downloading Debian {config.suite} arm64 packages ...")
        debs = _download_debs(config, stage / "apt")
        (target / "root").mkdir(parents=True)
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(target / "root")], f"unpacking {deb.name}")
        say("downloading aarch64 wheels from PyPI ...")
        wheels = _download_wheels(config, stage / "wheels")
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target / "site")
        (target / "cpuinfo").write_text(
            "\n".join(CPUINFO_BLOCK.format(index=i) for i in range(os.cpu_count() or 1)))
        manifest = {
            "format": ENV_FORMAT,
            "onnxruntime": config.onnxruntime_version,
            "numpy": config.numpy_version,
            "suite": config.suite,
            "cpu": config.cpu,
            "debs": sorted(d.name for d in debs),
            "wheels": sorted(w.name for w in wheels),
            "setup_seconds": round(time.perf_counter() - started, 1),
        }
        (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = env_dir / "env"
        if old.exists():
            os.replace(old, stage / "old")  # removed with the staging folder
        os.replace(target, old)
    env = find_env(config)
    say("checking that onnxruntime imports under emulation ...")
    probe = smoke_test(env)
    say(f"ARM64 environment ready in {env_dir} ({probe['machine']}, onnxruntime "
        f"{probe['onnxruntime']}, {manifest['setup_seconds']} s)")
    return env


def _apt_options(config: Arm64EnvConfig, apt_dir: Path) -> list[str]:
    """apt options for a private state: own sources, lists, cache, dpkg status; arm64 only."""
    for sub in ("state/lists/partial", "cache/archives/partial", "parts"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "state" / "status").touch()  # empty: every dependency gets downloaded
    signed = f"[arch=arm64 signed-by={config.keyring}]"
    (apt_dir / "sources.list").write_text(
        f"deb {signed} {config.mirror} {config.suite} main\n"
        f"deb {signed} {config.mirror} {config.suite}-updates main\n"
        f"deb {signed} {config.security_mirror} {config.suite}-security main\n")
    settings = {
        "Dir::Etc::sourcelist": apt_dir / "sources.list",
        "Dir::Etc::sourceparts": apt_dir / "parts",
        "Dir::State": apt_dir / "state",
        "Dir::State::status": apt_dir / "state" / "status",
        "Dir::Cache": apt_dir / "cache",
        "APT::Architecture": "arm64",
        "APT::Architectures::": "arm64",
        "Debug::NoLocking": "1",
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def _download_debs(config: Arm64EnvConfig, apt_dir: Path) -> list[Path]:
    options = ["-q", *_apt_options(config, apt_dir)]
    _run(["apt-get", *options, "update"], "apt-get update (Debian arm64 package lists)")
    _run(["apt-get", *options, "install", "--download-only", "-y", "--no-install-recommends",
          *DEB_PACKAGES], "apt-get download of the arm64 packages")
    debs = sorted((apt_dir / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise Arm64EnvError("apt-get downloaded no arm64 packages")
    return debs


def _download_wheels(config: Arm64EnvConfig, wheel_dir: Path) -> list[Path]:
    wheel_dir.mkdir(parents=True)
    wanted = [f"onnxruntime=={config.onnxruntime_version}", f"numpy=={config.numpy_version}",
              *EXTRA_WHEELS]
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
          "--only-binary=:all:", "--no-deps", "--platform", WHEEL_PLATFORM,
          "--python-version", "3.11", "--implementation", "cp", "-d", str(wheel_dir), *wanted],
         "pip download of the aarch64 wheels")
    return sorted(wheel_dir.glob("*.whl"))


def _run(command: list[str], what: str, timeout: float | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise one line with the last line it printed."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=env)
    except FileNotFoundError:
        raise Arm64EnvError(f"{what}: {command[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise Arm64EnvError(f"{what}: no result after {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit code {result.returncode}"
        if result.returncode < 0:
            detail = f"killed by signal {-result.returncode}" + (f" ({detail})" if lines else "")
        if "unshare" in detail:
            detail += (" (the run needs a private mount namespace for its ARM /proc/cpuinfo: "
                       "run as root with CAP_SYS_ADMIN, or allow unprivileged user namespaces)")
        raise Arm64EnvError(f"{what} failed: {detail}")
    return result


def smoke_test(env: Arm64Env) -> dict[str, Any]:
    """Import numpy and onnxruntime under emulation; return what they report."""
    with tempfile.TemporaryDirectory(prefix="itm-onnx-arm64-") as tmp:
        jobs = Path(tmp) / "jobs.json"
        jobs.write_text(json.dumps({"threads": 1, "jobs": []}))
        script = Path(tmp) / "runner.py"
        script.write_text(RUNNER)
        return _run_runner(env.python_command(script, str(jobs), str(env.site)),
                           "ARM64 smoke test", _emulation_env(env))


# --------------------------------------------------------------------------------------
# Parity runs
# --------------------------------------------------------------------------------------

# The script both sides run: same session settings, one image at a time, outputs saved.
RUNNER = r'''
import json, sys, time
jobs_path, site = sys.argv[1], sys.argv[2]
if site:
    sys.path.insert(0, site)
import platform
import numpy as np
import onnxruntime as ort

spec = json.load(open(jobs_path))
timings = []
for job in spec["jobs"]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    outputs = [session.run(None, {name: x[None]})[0][0] for x in np.load(job["inputs"])]
    np.save(job["outputs"], np.stack(outputs))
    timings.append(round(time.perf_counter() - started, 3))
print(json.dumps({"machine": platform.machine(), "onnxruntime": ort.__version__,
                  "numpy": np.__version__, "seconds": timings}))
'''


@dataclass
class ParityConfig:
    """Which models to compare on which images."""

    models: list[Path] = field(default_factory=list)
    images: Path | None = None  # folder of LDR photos; None: synthetic scenes
    count: int = 3  # images used (synthetic ones are drawn, a folder's first `count`)
    threads: int = 1  # intra-op threads on both sides (same settings, same kernels)
    seed: int = 0
    require_within_1_code: float = 0.999  # share of pixels within 1 code for "passed"
    dynamic_size: tuple[int, int] = (256, 256)  # input size for a dynamic-shape model
    timeout: float | None = 3600.0  # per emulated run, seconds
    env: Arm64EnvConfig = field(default_factory=Arm64EnvConfig)


@dataclass
class ModelParity:
    model: str
    input_shape: list[int]
    images: int
    max_abs_diff: float
    max_code_diff: int
    pixels: int
    share_code_diff_gt0: float  # pixels whose 10-bit code differs at all (any channel)
    share_code_diff_gt1: float  # pixels off by more than one code
    within_1_code: float
    passed: bool
    arm64_seconds: float
    host_seconds: float


@dataclass
class ParityReport:
    models: list[ModelParity]
    images: str
    threads: int
    require_within_1_code: float
    arm64: dict[str, Any]
    host: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def code_difference(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Differences of two (N, C, H, W) outputs, on [0, 1] and on 10-bit codes.

    A pixel counts as differing when any of its channels does; codes are
    ``round(clip(y, 0, 1) * 1023)``, how the output is stored.
    """
    if reference.shape != candidate.shape:
        raise ItmOnnxError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    codes = [np.rint(np.clip(y, 0.0, 1.0) * 1023.0).astype(np.int32)
             for y in (reference, candidate)]
    per_pixel = np.abs(codes[0] - codes[1]).max(axis=1)
    pixels = int(per_pixel.size)
    gt1 = float((per_pixel > 1).sum()) / pixels
    return {
        "max_abs_diff": float(np.abs(reference.astype(np.float64) - candidate).max()),
        "max_code_diff": int(per_pixel.max()),
        "pixels": pixels,
        "share_code_diff_gt0": float((per_pixel > 0).sum()) / pixels,
        "share_code_diff_gt1": gt1,
        "within_1_code": 1.0 - gt1,
    }


def synthetic_inputs(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` LDR photos (1, 3, H, W) in [0, 1]: procedural HDR scenes of the test split,
    tone-mapped by a random operator and quantized to 8 bits, as in training."""
    from .data import random_tmo, render_scene, scene_seed, to_8bit

    images = []
    for index in range(count):
        hdr = render_scene(scene_seed(seed, "test", index), height, width)
        rng = np.random.default_rng([seed, index])
        ldr, _operator = random_tmo(hdr, rng)
        rgb8 = to_8bit(ldr, rng)
        images.append((rgb8.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy())
    return images


def folder_inputs(folder: Path, count: int, height: int, width: int) -> list[np.ndarray]:
    """The first ``count`` usable photos of ``folder``, resized to the model's input."""
    from PIL import Image

    from .data import ImageError, iter_images

    images = []
    try:
        for loaded in iter_images(folder, skipped=[]):
            picture = Image.fromarray(loaded.rgb)
            if picture.size != (width, height):
                picture = picture.resize((width, height), Image.Resampling.BILINEAR)
            rgb = np.asarray(picture, np.float32) / 255.0
            images.append(rgb.transpose(2, 0, 1)[None].copy())
            if len(images) == count:
                break
    except ImageError as exc:
        raise UsageError(str(exc)) from None
    return images


def _model_input(path: Path, dynamic_size: tuple[int, int]) -> tuple[list[int], bool]:
    """(N, C, H, W) the model is run at, and whether its H/W were dynamic."""
    import onnx

    if not Path(path).is_file():
        raise UsageError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ItmOnnxError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise UsageError(f"{path}: expected one NCHW image input")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 0
            for d in inputs[0].type.tensor_type.shape.dim]
    dynamic = 0 in dims[2:]
    height, width = dynamic_size if dynamic else dims[2:]
    return [1, dims[1] or 3, height, width], dynamic


def _emulation_env(env: Arm64Env) -> dict[str, str]:
    variables = dict(os.environ)
    variables["QEMU_CPU"] = env.cpu
    return variables


def _run_runner(command: list[str], what: str, env: dict[str, str] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
    result = _run(command, what, timeout=timeout, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise Arm64EnvError(f"{what}: the runner printed no result")
    return json.loads(lines[-1])


def run_parity(config: ParityConfig, progress: Progress | None = None) -> ParityReport:
    """Run every model on the same images on ARM64 (emulated) and on the host; compare."""
    say = progress or (lambda _message: None)
    if not config.models:
        raise UsageError("give at least one --model")
    if config.count < 1:
        raise UsageError("--count must be at least 1")
    shapes = {Path(m): _model_input(Path(m), config.dynamic_size)[0] for m in config.models}
    env = find_env(config.env)
    with tempfile.TemporaryDirectory(prefix="itm-onnx-arm64-") as tmp:
        work = Path(tmp)
        jobs, inputs_by_shape, description = [], {}, ""
        for index, (model, shape) in enumerate(shapes.items()):
            key = tuple(shape[2:])
            if key not in inputs_by_shape:
                images, description = _inputs(config, *key)
                inputs_by_shape[key] = work / f"inputs_{key[0]}x{key[1]}.npy"
                np.save(inputs_by_shape[key], np.concatenate(images))
            jobs.append({"model": str(model.resolve()), "inputs": str(inputs_by_shape[key]),
                         "outputs": str(work / f"out_{index}.npy")})
        script = work / "runner.py"
        script.write_text(RUNNER)
        results = {}
        for side in ("host", "arm64"):
            spec = work / f"jobs_{side}.json"
            side_jobs = [{**j, "outputs": j["outputs"].replace(".npy", f"_{side}.npy")}
                         for j in jobs]
            spec.write_text(json.dumps({"threads": config.threads, "jobs": side_jobs}))
            say(f"running {len(jobs)} model(s) on {side} ...")
            if side == "host":
                command = [sys.executable, "-I", str(script), str(spec), ""]
                results[side] = _run_runner(command, "host run")
            else:
                results[side] = _run_runner(env.python_command(script, str(spec), str(env.site)),
                                            "ARM64 run under emulation", _emulation_env(env),
                                            config.timeout)
            results[side]["outputs"] = [j["outputs"] for j in side_jobs]
        models = []
        for index, (model, shape) in enumerate(shapes.items()):
            host = np.load(results["host"]["outputs"][index])
            arm = np.load(results["arm64"]["outputs"][index])
            diff = code_difference(host, arm)
            models.append(ModelParity(
                model=str(model), input_shape=shape, images=int(host.shape[0]),
                passed=diff["within_1_code"] >= config.require_within_1_code,
                arm64_seconds=results["arm64"]["seconds"][index],
                host_seconds=results["host"]["seconds"][index], **diff))
    for side in results.values():
        del side["outputs"], side["seconds"]
    return ParityReport(models=models, images=description, threads=config.threads,
                        require_within_1_code=config.require_within_1_code,
                        arm64={**results["arm64"], "cpu": env.cpu, "env": str(env.path)},
                        host={**results["host"], "cpu": platform.processor() or "x86_64"})


def _inputs(config: ParityConfig, height: int, width: int) -> tuple[list[np.ndarray], str]:
    if config.images is None:
        images = synthetic_inputs(config.count, height, width, config.seed)
        return images, f"{len(images)} synthetic LDR scene(s) (seed {config.seed})"
    images = folder_inputs(Path(config.images), config.count, height, width)
    return images, f"{len(images)} photo(s) from {config.images}"
