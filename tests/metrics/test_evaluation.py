"""evaluate(): streaming, one feature pass per network, the record, the reference cache.

A cheap stand-in network (pixel means on a 4x4 grid) replaces Inception here; the real
networks are tested in test_metrics_inception.py and test_metrics_classifier.py.
"""

import time
import warnings

import pytest
import torch

from ganforge.errors import ConfigError
from ganforge.metrics import evaluation as ev
from ganforge.metrics.definitions import Unavailable


class PooledPixels:
    name, sha256, resize = "pooled-pixels", "0" * 64, "adaptive-avg-4x4"

    def __init__(self, with_logits=False):
        self.calls, self.with_logits = 0, with_logits

    def __call__(self, images):
        self.calls += 1
        f = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1).double()
        return f, (f[:, :10] * 20 if self.with_logits else None)


@pytest.fixture
def nets(monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    made = {}

    def build(key, *, device, inception_path, cache_dir, classifier):
        if key == "classifier" and classifier == "nothing":
            raise Unavailable("no classifier for this dataset")
        net = PooledPixels(with_logits=key == "classifier")
        made[key] = net
        return ev._Network(key, net, name=net.name, sha256=net.sha256, resize=net.resize, source="test")

    monkeypatch.setattr(ev, "_build_network", build)
    return made


def _real(n=300, seed=0):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _replay(images, labels=None):
    """generate() that hands out `images` in order (deterministic, ignores the generator)."""
    state = {"i": 0}

    def generate(b, gen):
        i = state["i"]
        state["i"] += b
        return images[i: i + b], (labels[i: i + b] if labels is not None else None)

    return generate


def test_fid_of_the_real_set_against_itself_is_zero_and_record_is_complete(nets):
    real = _real()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["fid", "kid", "pr"],
                          n=300, batch_size=64, device="cpu", seed=3)
    assert any("2048" in str(w.message) for w in caught)
    fid = rec["metrics"]["fid"]
    assert abs(fid["value"]) < 1e-6
    for field in ("value", "n_generated", "n_real", "reference_split", "feature_network", "feature_network_sha256",
                  "resize_method", "seed", "ganforge_version", "seconds", "warning"):
        assert field in fid, field
    assert fid["n_real"] == 300 and fid["seed"] == 3 and fid["reference_split"] == "train"
    assert rec["metrics"]["pr"]["value"] == {"precision": 1.0, "recall": 1.0}
    assert abs(rec["metrics"]["kid"]["value"]) < 1e-2
    flat = ev.flat_values(rec)
    assert set(flat) == {"fid", "kid", "pr_precision", "pr_recall"}
    # one feature pass per batch for all three metrics: 5 generated + 5 real batches
    assert nets["inception"].calls == 10


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_reference_statistics_are_cached_on_disk(nets):
    real = _real()
    kwargs = dict(dataset_key="toy", metrics=["fid"], n=100, batch_size=50, device="cpu", n_real=200,
                  real_fingerprint="toy-files-v1")
    first = ev.evaluate(generate=_replay(_real(seed=1)), real_images=real, **kwargs)
    assert first["networks"]["inception"]["reference"]["cached"] is False

    def must_not_load():
        raise AssertionError("the real images were loaded despite the cache")

    second = ev.evaluate(generate=_replay(_real(seed=1)), real_images=must_not_load, **kwargs)
    assert second["networks"]["inception"]["reference"]["cached"] is True
    assert second["metrics"]["fid"]["value"] == pytest.approx(first["metrics"]["fid"]["value"], rel=1e-12)
    # a different N real is a different key
    third = ev.evaluate(generate=_replay(_real(seed=1)), real_images=real, **dict(kwargs, n_real=150))
    assert third["networks"]["inception"]["reference"]["cached"] is False


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_unavailable_metrics_say_why_instead_of_failing(nets):
    real = _real(100)
    rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["is", "cls-acc"],
                      n=100, batch_size=50, device="cpu")
    assert rec["metrics"]["is"]["value"] is None and "pt_inception" in rec["metrics"]["is"]["unavailable"]
    assert rec["metrics"]["cls-acc"]["value"] is None and "unconditional" in rec["metrics"]["cls-acc"]["unavailable"]
    rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["cls-is"], n=100,
                      batch_size=50, device="cpu", classifier="nothing")
    assert "no classifier" in rec["metrics"]["cls-is"]["unavailable"]


def test_class_accuracy_and_classifier_score_with_labels(nets):
    real = _real(100)
    labels = torch.arange(100) % 10
    rec = ev.evaluate(generate=_replay(real, labels), real_images=real, dataset_key="toy",
                      metrics=["cls-acc", "cls-is"], n=100, batch_size=25, device="cpu")
    assert 0.0 <= rec["metrics"]["cls-acc"]["value"] <= 1.0
    assert rec["metrics"]["cls-is"]["value"] >= 1.0 and rec["metrics"]["cls-is"]["splits"] == 10


def test_make_generate_maps_minus_one_one_to_uint8():
    class G(torch.nn.Module):
        def forward(self, z, labels=None):
            return torch.tanh(z[:, :4].view(-1, 1, 2, 2) * 10)

    generate = ev.make_generate(G(), z_dim=8)
    images, labels = generate(5, torch.Generator().manual_seed(0))
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 2, 2) and labels is None
    assert set(images.unique().tolist()) <= {0, 255} | set(range(256))
    images, labels = ev.make_generate(G(), z_dim=8, num_classes=3)(6, torch.Generator().manual_seed(0))
    assert labels.shape == (6,) and int(labels.max()) < 3


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_reference_cache_is_keyed_by_the_data_content_not_its_name(nets):
    """Two data sets under one name (two `folder`s, two CIFAR-10 copies) are two entries."""
    kwargs = dict(dataset_key="folder", metrics=["fid"], n=100, batch_size=50, device="cpu")
    a = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(seed=2), **kwargs)
    b = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(seed=3), **kwargs)
    assert b["networks"]["inception"]["reference"]["cached"] is False
    assert b["metrics"]["fid"]["value"] != pytest.approx(a["metrics"]["fid"]["value"])
    # the same content again is a hit, whatever object holds it
    c = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(seed=3).clone(), **kwargs)
    assert c["networks"]["inception"]["reference"]["cached"] is True
    # a fingerprint given by the data layer decides without loading the images
    d = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(seed=3), real_fingerprint="files-A", **kwargs)
    assert d["networks"]["inception"]["reference"]["cached"] is False
    e = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(seed=4), real_fingerprint="files-B", **kwargs)
    assert e["networks"]["inception"]["reference"]["cached"] is False


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_concurrent_evaluations_never_share_a_temporary_file(nets, monkeypatch):
    """A second evaluation saving the same entry while the first one is writing it."""
    real_save, calls = torch.save, []
    kwargs = dict(dataset_key="toy", metrics=["fid"], n=100, batch_size=50, device="cpu", n_real=100,
                  real_fingerprint="same")

    def save(obj, f, *args, **kw):
        calls.append(str(getattr(f, "name", f)))
        if len(calls) == 1:  # the other evaluation finishes while this one is between write and rename
            ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(), **kwargs)
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", save)
    first = ev.evaluate(generate=_replay(_real(seed=1)), real_images=_real(), **kwargs)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(calls) == 2 and calls[0] != calls[1]
    again = ev.evaluate(generate=_replay(_real(seed=1)), real_images=lambda: 1 / 0, **kwargs)
    assert again["networks"]["inception"]["reference"]["cached"] is True
    assert again["metrics"]["fid"]["value"] == pytest.approx(first["metrics"]["fid"]["value"], rel=1e-12)


def test_empty_metric_list_is_refused(nets):
    with pytest.raises(ConfigError, match="no metrics to compute"):
        ev.evaluate(generate=_replay(_real()), real_images=_real(), dataset_key="toy", metrics=[], n=10)


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_reference_problems_stop_before_any_image_is_generated(nets):
    def generate(b, gen):
        raise AssertionError("an image was generated before the reference data was checked")

    with pytest.raises(ConfigError, match="asked for 500 real images but toy train has 300"):
        ev.evaluate(generate=generate, real_images=_real(300), dataset_key="toy", metrics=["fid"], n=100,
                    n_real=500)


def test_too_few_images_for_a_metric_is_refused_before_any_work(nets):
    # Precision/recall takes each point's 3rd nearest neighbour: with 3 images that is undefined, and
    # the refusal must come before the reference side, which can take an hour of Inception.
    def real_images():
        raise AssertionError("the reference images were loaded before the sample counts were checked")

    with pytest.raises(ConfigError, match="metric pr needs at least 4 generated and real images; got n=3"):
        ev.evaluate(generate=_replay(_real()), real_images=real_images, dataset_key="toy", metrics=["fid", "pr"], n=3)
    with pytest.raises(ConfigError, match="got n=10, n_real=3"):
        ev.evaluate(generate=_replay(_real()), real_images=real_images, dataset_key="toy", metrics=["pr"], n=10,
                    n_real=3)


@pytest.mark.filterwarnings("ignore:kid with n=")
def test_kid_spread_only_when_subsets_differ(nets):
    small = ev.evaluate(generate=_replay(_real(300, seed=1)), real_images=_real(300), dataset_key="toy",
                        metrics=["kid"], n=300, batch_size=100)["metrics"]["kid"]
    assert "std" not in small and small["subsets"] == 1 and "no spread" in small["note"]
    big = ev.evaluate(generate=_replay(_real(1200, seed=1)), real_images=_real(1200), dataset_key="toy",
                      metrics=["kid"], n=1200, batch_size=400)["metrics"]["kid"]
    assert big["std"] > 0 and big["subsets"] == 100 and big["subset_size"] == 1000 and "note" not in big


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_estimate_then_progress_with_time_to_go(nets, monkeypatch):
    monkeypatch.setattr("ganforge.metrics.progress.QUIET_BELOW", 0.0)  # the stand-in network is fast
    lines = []
    rec = ev.evaluate(generate=_replay(_real(400, seed=1)), real_images=_real(400), dataset_key="toy",
                      metrics=["fid"], n=400, batch_size=20, log=lines.append)
    assert lines[0].startswith("estimate: 380 more generated images + 400 real through inception, at ")
    assert "images/s measured on the first batch here: about " in lines[0]
    steps = [x for x in lines[1:] if "to go" in x]
    assert len(steps) >= 5 and steps[-1].startswith("  eval 100% done")
    assert set(rec["time_to_go"]) == {"estimated_seconds", "actual_seconds"}  # (ms here: the stand-in is fast)


def test_default_metrics_are_those_computable_here():
    from ganforge.metrics.definitions import CLASSIFIER, INCEPTION, Context, choose

    ctx = Context({INCEPTION: None, CLASSIFIER: "there is a shipped classifier only for mnist"},
                  logits=frozenset(), conditional=False)
    chosen, left_out = choose(ctx)
    assert chosen == ["fid", "kid", "pr"]
    assert "pt_inception" in left_out["is"] and set(left_out) == {"is", "cls-acc", "cls-fid", "cls-is"}
    chosen, left_out = choose(Context({INCEPTION: None, CLASSIFIER: None}, frozenset({CLASSIFIER}), True))
    assert chosen == ["fid", "kid", "pr", "cls-acc", "cls-fid", "cls-is"] and set(left_out) == {"is"}
    chosen, _ = choose(Context({INCEPTION: "offline", CLASSIFIER: None}, frozenset({CLASSIFIER}), False))
    assert chosen == ["cls-fid", "cls-is"]


def _rank(rank: int, folder: str) -> None:
    """One gloo rank: its own cache folder; only rank 0's holds the entry (a cache not shared between nodes)."""
    import json
    from pathlib import Path

    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    ev._build_network = lambda key, **kw: ev._Network(key, PooledPixels(), name="pooled-pixels", sha256="0" * 64,
                                                      resize="adaptive-avg-4x4", source="test")
    kwargs = dict(generate=_replay(_real(seed=1)), real_images=_real(), dataset_key="toy", metrics=["fid"], n=100,
                  batch_size=50, device="cpu", shard=True, cache_dir=Path(folder) / f"cache-{rank}",
                  real_fingerprint="toy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rank == 0:  # fill rank 0's cache alone, outside the group
            ev.evaluate(**dict(kwargs, shard=False, generate=_replay(_real(seed=1))))
        rec = ev.evaluate(**kwargs)
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(rec["networks"]["inception"]["reference"]))
    torch.distributed.destroy_process_group()


def test_ranks_decide_together_whether_the_cache_holds_the_reference(tmp_path):
    """Rank 0 finds the entry, rank 1 does not; both must compute (no hang, same answer)."""
    import json

    import torch.multiprocessing as mp

    ctx = mp.start_processes(_rank, args=(str(tmp_path),), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 120
    try:
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "the ranks hang: they did not agree about the cache"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    refs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["cached"] for r in refs] == [False, False]


def test_progress_bar_on_a_terminal_shows_the_time_to_go(capsys):
    from ganforge.metrics.progress import EvalProgress, duration

    bar = EvalProgress(20.0, log=print, tty=True)
    for _ in range(4):
        time.sleep(0.12)  # tqdm redraws at most every 0.1 s
        bar.advance(5.0)
    bar.close()
    err = capsys.readouterr().err
    assert "eval 100%" in err and "to go" in err and bar.elapsed > 0
    assert [duration(s) for s in (4.4, 185, 4320)] == ["4 s", "3 min 05 s", "1 h 12 min"]


def test_progress_log_reaches_100_percent_when_the_batch_costs_sum_short_of_the_total(monkeypatch):
    monkeypatch.setattr("ganforge.metrics.progress.QUIET_BELOW", 0.0)
    from ganforge.metrics.progress import EvalProgress

    lines = []
    progress = EvalProgress(100 * 0.1, log=lines.append, tty=False)  # 10.0
    for _ in range(100):
        progress.advance(0.1)  # summed: 9.99999999999998
    assert lines[-1].startswith("  eval 100% done") and len(lines) == 10
