"""The reference-statistics cache: the real side of an evaluation, computed once per content.

An entry is keyed by everything that changes the statistics: the fingerprint of the real data's
content (`ganforge.data.dataset_reference_key`: a digest of what the files hold, the image size,
crop and limit, and the reader version; not their paths or times, so a copied or newly mounted
data set keeps its entry), the split, N real and the subset seed, the feature
network (its sha256 and resize rule), the precision and the device type the features were computed
with (a GPU's float32 convolutions differ from a CPU's by more than the statistics' own round-off)
and the layout of the entry itself. Two folders with the same
name, or the JPEG and the original CIFAR-10, are therefore two entries; `--data-dir` picks one.

Under torchrun all ranks decide together whether the cache holds an entry (a hit only when every
rank can read it), because a miss means a sharded feature pass that needs every rank. Entries are
written under a unique temporary name and renamed into place, so concurrent evaluations never
share a temporary file; a cache folder that cannot be written only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional, Union

import torch

from ganforge import fsutil
from ganforge.data.cache import cache_unavailable
from ganforge.metrics.definitions import Side

STATS_VERSION = 3   # 2: keyed by the data's fingerprint, N real may be "all"; 3: precision and device type
SUBSET_SEED = 0     # the real subset depends on N real only, so a key stays valid


def key(*, data: str, dataset: str, split: str, n_real: Optional[int], network: str, sha256: str,
        resize: str, precision: str, device: Union[str, torch.device]) -> dict:
    """device: where the features are computed. Only its type (cpu, cuda, mps) is kept: cuda:0 and cuda:1
    compute alike, while a GPU's and a CPU's float32 convolutions (different algorithms and summation
    orders) give statistics that should not be mixed."""
    return {"data": data, "dataset": dataset, "split": split, "n_real": "all" if n_real is None else int(n_real),
            "subset_seed": SUBSET_SEED, "network": network, "sha256": sha256, "resize": resize,
            "precision": precision, "device": torch.device(device).type, "version": STATS_VERSION}


def path_for(folder: Path, k: dict) -> Path:
    # A readable stem so a person can tell the entries apart in a listing; the digest of the whole
    # key keeps two entries with the same stem (two `folder` data sets) apart.
    digest = hashlib.sha256(repr(sorted(k.items())).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{k['dataset']}_{k['split']}_{k['n_real']}_{k['network']}")
    return folder / f"{stem}_{digest}.pt"


def load(path: Path, k: dict, needs: set[str]) -> Optional[Side]:
    """The cached side, or None when the entry is absent, unreadable, another key's or lacks what is needed."""
    try:
        # weights_only: a cache folder may be shared, and a pickle could run code; tensors cannot
        saved = torch.load(path, map_location="cpu", weights_only=True)
        # the key is compared whole, not trusted from the file name: a renamed or copied entry
        # of other data is a miss
        if saved.get("key") != k or ("features" in needs and "features" not in saved):
            return None
        return Side(n=int(saved["n"]), mu=saved["mu"].numpy(), sigma=saved["sigma"].numpy(),
                    features=saved.get("features"))
    except Exception:  # absent or damaged: a miss (a later save replaces it)
        return None


def save(path: Path, k: dict, side: Side) -> None:
    blob = {"key": k, "n": side.n, "mu": torch.from_numpy(side.mu), "sigma": torch.from_numpy(side.sigma)}
    if side.features is not None:
        blob["features"] = side.features.cpu()   # loadable on a machine without the device
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with fsutil.atomic_file(path) as tmp:
            torch.save(blob, tmp)
    except OSError as e:
        cache_unavailable(path.parent, e)


def agree(hit: bool, *, device: Union[str, torch.device], group: bool) -> bool:
    """`hit` when it holds on every rank of the process group (group=True), else this process's own answer."""
    if not group:
        return hit
    import torch.distributed as dist

    on = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([1 if hit else 0], device=on)
    # MIN: one rank's miss is everyone's, since the sharded feature pass that follows needs every rank
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def content_hash(images: torch.Tensor) -> str:
    """A fingerprint of an in-memory image array, for callers that have no files to point to."""
    h = hashlib.sha256(repr((tuple(images.shape), str(images.dtype))).encode())
    flat = images.detach().cpu().contiguous().view(-1).numpy()
    for i in range(0, len(flat), 1 << 26):
        h.update(flat[i:i + (1 << 26)].data)  # 64 MiB at a time, without copies (a memoryview of the slice)
    return "sha256:" + h.hexdigest()[:20]
