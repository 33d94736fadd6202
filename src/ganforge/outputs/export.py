"""`ganforge export`: the generator alone as ONNX or TorchScript, checked against PyTorch after export.

Inputs: `z` (float32 [B, z_dim]) and, for a conditional model, `labels` (int64 [B]); output `images`
(float32 [B, C, H, W] in [-1, 1]); the batch dimension is dynamic. The file carries what a user needs
to call it (z_dim, classes, image size) as ONNX metadata or a TorchScript extra file `ganforge.json`.
The check runs the exported file on fixed inputs with a batch size other than the one used to export.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ganforge import __version__
from ganforge.errors import GanforgeError, UsageError
from ganforge.outputs.files import atomic_output
from ganforge.outputs.model import Model, labels_for, latents

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
# Largest difference from PyTorch's output allowed, in [-1, 1] units: far below one uint8 level
# (1/127.5), and above the float32 reordering ONNX Runtime's fused kernels bring.
TOLERANCE = 1e-4


class ExportError(GanforgeError):
    """The exported generator does not reproduce PyTorch's output, or the exporter failed."""


# Wrappers give the exported graph a fixed signature: (z, labels) or (z) alone, without the
# optional `labels=None` a traced graph cannot keep.
class _Conditional(nn.Module):
    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.g(z, labels)


class _Unconditional(_Conditional):
    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.g(z, None)


def metadata(model: Model) -> dict[str, str]:
    """What the file says of itself; a private run's generator also its guarantee (epsilon, delta, accountant)."""
    from ganforge.training.ledger import summary

    private = summary(model.run_dir)
    return {"ganforge_version": __version__, "arch": model.cfg.model.arch, "z_dim": str(model.z_dim),
            "num_classes": str(model.num_classes),
            "class_names": json.dumps(model.class_names if model.conditional else []),
            "image_shape": json.dumps([model.channels, model.size, model.size]), "value_range": "[-1, 1]",
            "source": f"{model.checkpoint}", **({"privacy": json.dumps(private)} if private else {})}


def example_inputs(model: Model, batch: int, seed: int = 1234) -> tuple[torch.Tensor, ...]:
    z = latents(seed, 0, batch, model.z_dim)
    if not model.conditional:
        return (z,)
    labels = labels_for(model, 0, batch, None)
    assert labels is not None  # a conditional model always draws labels
    return z, labels


def _export_onnx(module: nn.Module, model: Model, path: Path) -> None:
    import onnx

    names = ["z", "labels"] if model.conditional else ["z"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        # Traced with a batch of 2, not 1: a batch of 1 lets the tracer fold the batch dimension into
        # constants; opset 17, which current ONNX Runtime versions and browsers' runtimes all load.
        torch.onnx.export(module, example_inputs(model, 2), str(path), input_names=names, output_names=["images"],
                          dynamic_axes={n: {0: "batch"} for n in names + ["images"]}, opset_version=17,
                          dynamo=False)
    proto = onnx.load(str(path))
    # The tracer names output dimensions after whatever symbol fed them (a ResNet's reshape gives
    # [batch, 1, batch, ...]); the output is always [batch, C, H, W], so say so.
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    del dims[:]
    for value in ("batch", model.channels, model.size, model.size):
        dim = dims.add()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value
    for key, value in metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def run_onnx(path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(["images"], feed)[0])


def _export_torchscript(module: nn.Module, model: Model, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example_inputs(model, 2))
        torch.jit.save(traced, str(path), _extra_files={"ganforge.json": json.dumps(metadata(model))})


def run_torchscript(path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still what C++ users load
        return torch.jit.load(str(path))(*inputs)


def export(model: Model, *, fmt: str, out: Path, overwrite: bool = False) -> dict:
    """Write the generator to `out` and verify it; returns the check's figures. Nothing is left on failure."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    # on the CPU in eval mode: batch norm then uses its running statistics, as any user of the file will
    module = (_Conditional if model.conditional else _Unconditional)(model.g.cpu().eval()).eval()
    # checked on another batch size and other latents than it was traced with (2, seed 1234): a
    # batch size baked into the graph, or a traced data-dependent branch, shows up here
    check_inputs = example_inputs(model, 5, seed=99)
    with torch.no_grad():
        expected = module(*check_inputs)
    # The exporters abort the process (a C++ stack) when the disk fills mid-write: check the room first.
    weights = sum(p.numel() * p.element_size() for p in model.g.parameters())
    with atomic_output(Path(out), overwrite=overwrite, need_bytes=2 * weights + (1 << 20)) as tmp:
        try:
            (_export_onnx if fmt == "onnx" else _export_torchscript)(module, model, tmp)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExportError(f"{model.cfg.model.arch}: {fmt} export failed ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        with torch.no_grad():
            got = (run_onnx if fmt == "onnx" else run_torchscript)(tmp, check_inputs)
        diff = (got - expected).abs().max().item()
        if got.shape != expected.shape or not diff <= TOLERANCE:
            raise ExportError(f"{fmt} export of {model.run_dir} differs from PyTorch by {diff:.2e} "
                              f"(tolerance {TOLERANCE:g}); nothing was written")
    return {"format": fmt, "out": str(out), "max_abs_diff": diff, "check_batch": len(check_inputs[0]),
            "inputs": ["z", "labels"] if model.conditional else ["z"], "z_dim": model.z_dim,
            "num_classes": model.num_classes}
