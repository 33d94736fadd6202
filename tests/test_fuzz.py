"""Property-based tests: any --set text and any bytes handed to a dataset reader end in a value or
one clear error line, never a hang and never an exception from deep inside."""

from __future__ import annotations

import gzip
import io
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganforge.config import Config, all_keys, apply_override, validate
from ganforge.data import load_dataset
from ganforge.errors import ConfigError, DataError, GanforgeError

FUZZ = settings(max_examples=int(__import__("os").environ.get("GANFORGE_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = all_keys(Config())


def _one_line(exc: Exception) -> bool:
    return "\n" not in str(exc) and len(str(exc)) > 10


@FUZZ
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=20)), value=st.text(max_size=30))
def test_any_set_assignment_is_accepted_or_refused_in_one_line(key, value):
    cfg = Config()
    try:
        apply_override(cfg, f"{key}={value}")
        validate(cfg)
    except ConfigError as exc:
        assert _one_line(exc), str(exc)


@FUZZ
@given(text=st.text(max_size=40))
def test_assignment_without_equals_sign(text):
    try:
        apply_override(Config(), text)
    except ConfigError as exc:
        assert _one_line(exc)


def _write_idx_pair(folder, images: bytes, labels: bytes, *, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@FUZZ
@given(images=st.binary(max_size=400), labels=st.binary(max_size=40), gz=st.booleans(),
       header=st.booleans())
def test_idx_reader_on_random_bytes(tmp_path_factory, images, labels, gz, header):
    if header:  # a valid header with random (likely too short) data behind it reaches the deeper checks
        images = b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images
        labels = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + labels
    folder = tmp_path_factory.mktemp("idx")
    _write_idx_pair(folder, images, labels, gz=gz)
    try:
        data = load_dataset(name="mnist", root=folder, cache=False)
        assert data.images.shape[1:] == (1, 28, 28)
    except GanforgeError as exc:
        assert _one_line(exc), str(exc)


@FUZZ
@given(payload=st.binary(max_size=300), as_zip=st.booleans())
def test_folder_reader_on_random_bytes(tmp_path_factory, payload, as_zip):
    folder = tmp_path_factory.mktemp("imgs")
    if as_zip:
        target = folder / "images.zip"
        if payload[:1] == b"\x00":  # sometimes a real zip holding garbage "images"
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("a/x.png", payload)
                z.writestr("b/y.jpg", payload[::-1])
            target.write_bytes(buf.getvalue())
        else:
            target.write_bytes(payload)
    else:
        for i, name in enumerate(("one.png", "two.jpg", "three.webp")):
            (folder / name).write_bytes(payload[i:])
        target = folder
    try:
        load_dataset(name="folder", root=target, size=32, cache=False)
    except (DataError, ConfigError) as exc:
        assert _one_line(exc), str(exc)


@FUZZ
@given(payload=st.binary(max_size=300))
def test_cifar_batch_reader_on_random_bytes(tmp_path_factory, payload):
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(payload)
    try:
        load_dataset(name="cifar10", root=folder, cache=False)
    except GanforgeError as exc:
        assert _one_line(exc), str(exc)
