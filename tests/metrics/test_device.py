"""Evaluation on an accelerator, proved on a CPU: strict fp32 feature passes, device-aware reference
keys, images that stay on their device, networks built once, chunked feature and k-NN passes, and
rank 0 alone doing the metric maths under torchrun."""

import json
import time
import warnings
from pathlib import Path

import pytest
import torch

from ganforge.errors import ConfigError
from ganforge.metrics import audit_metrics as A
from ganforge.metrics import evaluation as ev
from ganforge.metrics import functional as mf
from ganforge.metrics import reference
from ganforge.metrics.precision import flags, strict_fp32

STRICT = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False, "float32_matmul_precision": "highest"}


def _images(n, seed=0, size=8):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _replay(images):
    state = {"i": 0}

    def generate(b, gen):
        state["i"] += b
        return images[state["i"] - b: state["i"]], None

    return generate


class Pooled:
    """Stand-in feature network (pixel means on a 4x4 grid) that records the precision flags it ran under."""

    name, sha256, resize = "pooled", "0" * 64, "adaptive-avg-4x4"

    def __init__(self):
        self.seen, self.inputs = [], []

    def __call__(self, images):
        self.seen.append(flags())
        self.inputs.append(images)
        return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1).double(), None


@pytest.fixture
def pooled(monkeypatch):
    net = Pooled()
    monkeypatch.setattr(ev, "_build_network", lambda key, **kw: ev._Network(
        key, net, name=net.name, sha256=net.sha256, resize=net.resize, source="test"))
    return net


@pytest.fixture
def training_flags():
    """The process as `runtime.configure` leaves it for training (TF32 on), put back afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    trained = flags()
    yield trained
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_feature_passes_run_without_tf32_and_training_keeps_it(pooled, training_flags):
    assert training_flags == {"cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True,
                              "float32_matmul_precision": "high"}
    rec = ev.evaluate(generate=_replay(_images(120, 1)), real_images=_images(100), dataset_key="toy",
                      metrics=["fid"], n=120, batch_size=50, device="cpu")
    assert len(pooled.seen) == 3 + 2 and all(seen == STRICT for seen in pooled.seen)
    assert flags() == training_flags
    assert rec["precision"] == "fp32" and rec["metrics"]["fid"]["precision"] == "fp32"
    assert rec["networks"]["inception"]["precision"] == "fp32"


def test_the_shipped_classifier_is_strict_by_itself_and_restores_medium(training_flags):
    """A caller outside `evaluate` (the audit) gets the same; "medium" (bf16 products, also on a CPU) too."""
    from ganforge.metrics.classifier import ShippedClassifier

    net = ShippedClassifier("mnist")
    seen = []
    net.model.body.register_forward_pre_hook(lambda module, args: seen.append(flags()))
    net(_images(4, size=28))
    assert seen == [STRICT] and flags() == training_flags
    with strict_fp32():
        with strict_fp32():   # nested passes (a sharded wrapper around a network) stay strict
            assert flags() == STRICT
        assert flags() == STRICT
    assert flags() == training_flags
    torch.set_float32_matmul_precision("medium")
    try:
        medium = flags()
        net(_images(4, size=28))
        assert seen[1] == STRICT and flags() == medium
    finally:
        torch.set_float32_matmul_precision("highest")   # the default, for the tests that follow


def test_reference_key_records_precision_and_device_type(pooled, tmp_path):
    base = dict(data="sha256:x", dataset="toy", split="train", n_real=None, network="inception", sha256="0" * 64,
                resize="r")
    cpu = reference.key(**base, precision="fp32", device="cpu")
    paths = {reference.path_for(tmp_path, reference.key(**base, precision=p, device=d))
             for p, d in (("fp32", "cpu"), ("fp32", "cuda"), ("tf32", "cuda"), ("fp32", "mps"))}
    assert len(paths) == 4 and cpu["device"] == "cpu" and cpu["precision"] == "fp32"
    # the GPU's index is not part of it: cuda:0 and cuda:1 compute alike
    assert reference.key(**base, precision="fp32", device="cuda:1") == reference.key(**base, precision="fp32",
                                                                                       device=torch.device("cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = ev.evaluate(generate=_replay(_images(60, 1)), real_images=_images(60), dataset_key="toy",
                          metrics=["fid"], n=60, batch_size=30, device="cpu", cache_dir=tmp_path)
    saved = torch.load(rec["networks"]["inception"]["reference"]["cache"], weights_only=True)
    assert saved["key"]["device"] == "cpu" and saved["key"]["precision"] == "fp32"


def test_make_generate_leaves_the_images_on_the_device_and_evaluate_passes_them_on(pooled):
    class G(torch.nn.Module):
        def forward(self, z, labels=None):
            return torch.tanh(z[:, :16].reshape(-1, 1, 4, 4))

    # "meta" is a device a CPU has: a hidden .cpu() would turn the images into (unreadable) CPU tensors.
    images, labels = ev.make_generate(G(), z_dim=16, num_classes=3, device="meta")(5, torch.Generator())
    assert images.device.type == "meta" and images.dtype == torch.uint8 and labels.device.type == "meta"

    generate, made = ev.make_generate(G(), z_dim=16), []

    def recorded(b, gen):
        made.append(generate(b, gen)[0])
        return made[-1], None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev.evaluate(generate=recorded, real_images=_images(40, size=4), dataset_key="toy", metrics=["fid"],
                    n=40, batch_size=20, device="cpu")
    assert len(made) == 2 and all(a is b for a, b in zip(pooled.inputs, made))  # the very tensors, no copy


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_feature_networks_are_built_once_per_process(monkeypatch):
    from ganforge.metrics import classifier as C

    built = []

    class Counted(C.ShippedClassifier):
        def __init__(self, *a, **kw):
            built.append(kw.get("device"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(C, "ShippedClassifier", Counted)
    monkeypatch.setattr("ganforge.metrics.networks._LOADED", {})
    kwargs = dict(real_images=_images(40, size=28), dataset_key="mnist", metrics=["cls-fid"], n=40, batch_size=20,
                  device="cpu")
    first = ev.evaluate(generate=_replay(_images(40, 1, size=28)), **kwargs)
    second = ev.evaluate(generate=_replay(_images(40, 1, size=28)), **kwargs)
    assert len(built) == 1
    assert second["metrics"]["cls-fid"]["value"] == pytest.approx(first["metrics"]["cls-fid"]["value"], rel=1e-12)


def _fake_inception(chunk):
    """An InceptionFeatures with a tiny network in place of Inception-v3 (the real one is 14 images/s here)."""
    from ganforge.metrics.inception import InceptionFeatures

    net = object.__new__(InceptionFeatures)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=16), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 2048)).eval()
    net.net, net.device, net.chunk = body, torch.device("cpu"), chunk
    net.fc_weight = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) / 50
    calls = []
    body.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    return net, calls


def test_a_large_batch_reaches_inception_in_chunks_with_the_same_features():
    torch.manual_seed(0)
    chunked, calls = _fake_inception(chunk=3)
    whole, whole_calls = _fake_inception(chunk=None)
    whole.net.load_state_dict(chunked.net.state_dict())
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    (f1, l1), (f2, l2) = chunked(images), whole(images)
    assert calls == [3, 3, 3, 1] and whole_calls == [10]   # CPU_CHUNK (16) takes all 10 at once
    assert f1.dtype == torch.float64 and f1.shape == (10, 2048) and l1.shape == (10, 1008)
    torch.testing.assert_close(f1, f2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("free_gib, expected", [(80, 200), (1, 8), (0, 1)])
def test_the_gpu_chunk_is_sized_by_free_memory(monkeypatch, free_gib, expected):
    net, _ = _fake_inception(chunk=None)
    net.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_gib << 30, 80 << 30))
    assert net.chunk_size() == expected   # half the free memory at 64 MiB an image, at most 200


def _brute_force_radii(x, k):
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values


def _features(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64) + shift


def test_chunked_precision_recall_equals_the_whole_matrix_computation():
    real, fake = _features(50, 0.0, 0), _features(41, 0.7, 1)
    rr, fr = _brute_force_radii(real, 3), _brute_force_radii(fake, 3)
    precision = float((torch.cdist(fake, real) <= rr[None]).any(1).double().mean())
    recall = float((torch.cdist(real, fake) <= fr[None]).any(1).double().mean())
    assert 0 < precision < 1 and 0 < recall < 1
    for rows in (1, 7, 50, 4096):   # blocks smaller than N, one block, more than N
        pr = mf.precision_recall(real, fake, k=3, batch_size=rows)
        assert (pr.precision, pr.recall) == (precision, recall), rows


def test_chunked_density_coverage_equals_the_whole_matrix_computation():
    real, fake = _features(45, 0.0, 2), _features(38, 0.5, 3)
    radii = _brute_force_radii(real, 5)
    inside = torch.cdist(fake, real) <= radii[None]
    density, coverage = int(inside.sum()) / (5 * len(fake)), float(inside.any(0).double().mean())
    assert 0 < coverage < 1 and density > 0
    for rows in (1, 6, 45, 4096):
        dc = A.density_coverage(real, fake.float(), k=5, batch_size=rows)
        assert (dc.density, dc.coverage) == pytest.approx((density, coverage), rel=0, abs=1e-12), rows


def test_a_batch_size_of_zero_or_less_is_one_line(capsys):
    from conftest import run_cli

    for bad, says in (("0", "--batch-size 0: must be between 1 and 4096, or auto"),
                      ("-3", "--batch-size -3: must be between 1 and 4096, or auto"),
                      ("many", "--batch-size 'many': must be auto or a whole number between 1 and 4096")):
        assert run_cli(["eval", "no-such-run", "--batch-size", bad]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    with pytest.raises(ConfigError, match="batch_size must be 'auto' or a whole number of at least 1, got -1"):
        ev.evaluate(generate=_replay(_images(4)), real_images=_images(4), dataset_key="toy", metrics=["fid"], n=4,
                    batch_size=-1)


def test_auto_batch_size_is_larger_on_cuda():
    assert ev.resolve_batch_size("auto", "cpu") == 50 and ev.resolve_batch_size("auto", "cpu", cpu=100) == 100
    assert ev.resolve_batch_size("auto", "cuda:0") == ev.CUDA_BATCH > 50
    assert ev.resolve_batch_size(7, "cuda") == 7


def _rank(rank: int, folder: str) -> None:
    """One gloo rank of two; records whether it computed the metrics."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    net = Pooled()
    ev._build_network = lambda key, **kw: ev._Network(key, net, name="pooled", sha256="0" * 64, resize="r",
                                                      source="test")
    computed, compute = [], ev._compute
    ev._compute = lambda *a, **kw: computed.append(rank) or compute(*a, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = ev.evaluate(generate=_replay(_images(101, 1)), real_images=_images(90), dataset_key="toy",
                          metrics=["fid", "pr"], n=101, batch_size=50, device="cpu", shard=True,
                          cache_dir=Path(folder) / "cache", real_fingerprint="toy")
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"metrics": rec["metrics"], "computed": computed,
                                                               "fed": sum(len(x) for x in net.inputs)}))
    torch.distributed.destroy_process_group()


def test_under_torchrun_rank_zero_alone_computes_and_every_rank_returns_its_record(tmp_path, pooled):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_rank, args=(str(tmp_path),), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 120
    try:
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "the ranks hang"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["computed"] for r in ranks] == [[0], []]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and ranks[0]["metrics"]["pr"]["value"]["precision"] > 0
    assert [r["fed"] for r in ranks] == [51 + 45, 51 + 45]   # each rank ran half of every batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = ev.evaluate(generate=_replay(_images(101, 1)), real_images=_images(90), dataset_key="toy",
                          metrics=["fid", "pr"], n=101, batch_size=50, device="cpu", cache_dir=tmp_path / "one")
    assert ranks[0]["metrics"]["fid"]["value"] == pytest.approx(one["metrics"]["fid"]["value"], rel=1e-9)
    assert ranks[0]["metrics"]["pr"]["value"] == one["metrics"]["pr"]["value"]
