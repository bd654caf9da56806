"""The torch-free checkpoint reader against hostile tensor geometry (fuzz) and damaged files."""

import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from egoexo_jax.convert.torch_zip import CheckpointReadError, load_torch_file

from capped_run import run_capped

REPO = pathlib.Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# A torch.save writer that spells every opcode itself, so a tensor can be given any
# (offset, size, stride), valid or not.

_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.uint8): "ByteStorage",
}


def _int(x):
    return pickle.dumps(int(x), protocol=2)[2:-1]  # BININT* / LONG1, no memo


def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(storage_type, key, numel, offset, size, stride):
    pid = _tuple([_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)]) + b"Q"
    args = _tuple(
        [
            pid,
            _int(offset),
            _tuple([_int(n) for n in size]),
            _tuple([_int(s) for s in stride]),
            b"\x89",
            _global("collections", "OrderedDict") + b")R",
        ]
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def tensors_pickle(tree):
    """Pickle of nested dicts whose leaves ``(storage type, key, numel, offset, size, stride)`` are tensors."""

    def enc(node):
        if isinstance(node, dict):
            return b"}(" + b"".join(_str(k) + enc(v) for k, v in node.items()) + b"u"
        type_name, key, numel, offset, size, stride = node
        return _tensor(type_name, key, numel, offset, size, stride)

    return b"\x80\x02" + enc(tree) + b"."


def write_pyth(path, storages, tensors, layout="zip"):
    """``storages``: ``{key: 1-D numpy array}``; ``tensors``: ``{name: (key, offset, size, stride)}``."""
    spec = {
        name: (_STORAGES[storages[k].dtype], k, storages[k].size, off, size, stride)
        for name, (k, off, size, stride) in tensors.items()
    }
    payload = tensors_pickle({"model_state": spec})
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", payload)
            z.writestr("archive/byteorder", "little")
            for k, arr in storages.items():
                z.writestr(f"archive/data/{k}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        return
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(payload)
        used = [k for k in storages if any(t[0] == k for t in tensors.values())]
        f.write(pickle.dumps(used, protocol=2))
        for k in used:
            f.write(struct.pack("<q", storages[k].size) + storages[k].tobytes())


def torch_view(flat, offset, size, stride, file_bytes):
    """What torch gives for ``flat.as_strided(size, stride, offset)`` (None: torch or the
    reader's size bound refuses it), computed by index arithmetic on a copy."""
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        return None
    numel = int(np.prod(size, dtype=object)) if size else 1
    if numel == 0:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size or numel * flat.itemsize > file_bytes:
        return None
    index = np.full(size, offset, np.int64)
    for d, (n, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[d] = n
        index = index + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    return flat.copy()[index]


def _random_geometry(rng, storage_size):
    ndim = int(rng.integers(0, 5))
    size = [
        int(rng.choice([0, 1, 1, 2, 3, 4, 5, -1])) if rng.uniform() < 0.1 else int(rng.integers(1, 5))
        for _ in range(ndim)
    ]
    stride = [int(rng.integers(0, 8)) for _ in range(ndim)]
    offset = int(rng.integers(0, storage_size // 4 + 2))
    roll = rng.uniform()
    if ndim and roll < 0.15:
        stride[int(rng.integers(ndim))] = int(rng.choice([-1, -7, -(1 << 20), -(1 << 63)]))
    elif ndim and roll < 0.3:
        stride[int(rng.integers(ndim))] = int(rng.choice([1 << 20, 1 << 40, (1 << 63) - 1, 1 << 70]))
    elif roll < 0.4:
        offset = int(rng.choice([-1, -(1 << 40), 1 << 30, (1 << 63) - 1, 1 << 64]))
    elif ndim and roll < 0.5:
        size[int(rng.integers(ndim))] = int(rng.choice([1 << 20, 1 << 40, (1 << 62)]))
        if rng.uniform() < 0.5:
            stride = [0] * ndim  # a broadcast view: in bounds, but huge
    return offset, tuple(size), tuple(stride)


# Adversarial triples from the fault-injection report and their neighbours.
ADVERSARIAL = [
    (0, (4,), (-1_000_000,)),  # negative stride: reads before the storage (SIGSEGV before the fix)
    (4_000_000, (4_000_000,), (-1,)),  # far offset walked back to the start: 16 MB of process memory
    (1_000_000, (4,), (1,)),  # offset past the end
    (0, (4,), (5_000_000,)),  # stride past the end
    (0, (1 << 40,), (0,)),  # a terabyte shape over one element
    (-4, (4,), (1,)),  # negative offset (numpy would wrap around)
    (15, (), ()),  # scalar at the last element: valid
    (16, (), ()),  # scalar one past the end
    (3, (0, 7), (1 << 62, 1 << 62)),  # no elements: valid whatever the strides
    (0, (1, 16), (1 << 62, 1)),  # size-1 dimension with a huge stride: valid
    (0, (2, 2), ((1 << 63) - 1, 1)),
    (2, (2, 3), (4, 1)),  # an ordinary sub-view
    (0, (4, 4), (1, 4)),  # transposed
]


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_fuzzed_geometry_loads_what_torch_would_or_refuses(tmp_path, layout):
    rng = np.random.default_rng(19)
    dtypes = [np.float32, np.float64, np.float16, np.int64, np.uint8]
    cases = [(np.float32, 16, g) for g in ADVERSARIAL]
    cases += [(dtypes[i % len(dtypes)], int(rng.integers(1, 80)), None) for i in range(200)]
    loaded = refused = 0
    for i, (dtype, n, geometry) in enumerate(cases):
        flat = (np.arange(n) * 3 + 1).astype(dtype)
        geometry = geometry or _random_geometry(rng, n)
        path = tmp_path / f"case{i}.pyth"
        other = np.full(64, 99, dtype)  # a second storage: values that must never leak in
        write_pyth(path, {"0": flat, "1": other}, {"w": ("0", *geometry), "b": ("1", 0, (64,), (1,))}, layout)
        want = torch_view(flat, *geometry, file_bytes=path.stat().st_size)
        if want is None:
            with pytest.raises(CheckpointReadError) as e:
                load_torch_file(path)
            msg = str(e.value)
            assert str(path) in msg and "'model_state/w'" in msg and "\n" not in msg, (geometry, msg)
            refused += 1
        else:
            got = load_torch_file(path)["model_state"]
            assert got["w"].shape == want.shape and got["w"].dtype == want.dtype, geometry
            np.testing.assert_array_equal(got["w"], want, err_msg=str(geometry))
            assert got["w"].flags.c_contiguous and got["w"].flags.owndata
            np.testing.assert_array_equal(got["b"], other)
            loaded += 1
    assert loaded > 60 and refused > 60, (loaded, refused)  # both outcomes really exercised


def test_bfloat16_view(tmp_path):
    values = np.array([1.0, -2.5, 3.0, 0.15625, 7.0, 8.0], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2")
    path = tmp_path / "bf16.pyth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensors_pickle({"w": ("BFloat16Storage", "0", 6, 1, (2, 2), (1, 2))}))
        z.writestr("archive/data/0", raw.tobytes())
    np.testing.assert_array_equal(load_torch_file(path)["w"], values[[[1, 3], [2, 4]]])
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensors_pickle({"w": ("BFloat16Storage", "0", 6, 5, (2,), (1,))}))
        z.writestr("archive/data/0", raw.tobytes())
    with pytest.raises(CheckpointReadError, match="reach element 6 but its storage has 6 elements"):
        load_torch_file(path)


def test_legacy_storage_sizes_are_bounded_by_the_file(tmp_path):
    flat = np.arange(8, dtype=np.float32)
    path = tmp_path / "legacy.pyth"
    write_pyth(path, {"0": flat}, {"w": ("0", 0, (8,), (1,))}, "legacy")
    data = path.read_bytes()
    count = struct.pack("<q", 8)
    assert data.count(count + flat.tobytes()) == 1
    for claim, words in (
        (1 << 60, "claims 1152921504606846976 elements"),
        (-5, "claims -5 elements"),
        (9, "file has 32 bytes left"),
    ):
        path.write_bytes(data.replace(count + flat.tobytes(), struct.pack("<q", claim) + flat.tobytes()))
        with pytest.raises(CheckpointReadError, match=words):
            load_torch_file(path)


def test_zip_bomb_storage_is_refused(tmp_path):
    path = tmp_path / "bomb.pyth"
    n = 4 << 20  # 16 MB of zeros that deflate to a few kB
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", tensors_pickle({"w": ("FloatStorage", "0", n, 0, (n,), (1,))}))
        z.writestr("archive/data/0", bytes(4 * n))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointReadError, match="entry .archive/data/0. declares 16777216 bytes unpacked, more than"):
        load_torch_file(path)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "deep.pyth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".")
    with pytest.raises(CheckpointReadError, match="truncated or corrupt"):
        load_torch_file(path)


def test_converter_cli_refuses_a_hostile_tensor_in_one_line(tmp_path):
    """The reported SIGSEGV case through ``python -m egoexo_jax.convert``: exit 2, one line."""
    path = tmp_path / "negative_stride.pyth"
    write_pyth(path, {"0": np.arange(16, dtype=np.float32)}, {"s1.conv.weight": ("0", 0, (4,), (-1_000_000,))})
    res = subprocess.run(
        [sys.executable, "-m", "egoexo_jax.convert", "--input", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"error: {path}: tensor 'model_state/s1.conv.weight' (storage 0): negative storage "
        "offset, size or stride (offset 0, size (4,), stride (-1000000,)); a PyTorch tensor "
        "has none"
    ], res.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Bombs: each runs in a subprocess whose address space is capped 1 GiB above what the import took.

_LOAD = """
try:
    load_torch_file(sys.argv[1])
except CheckpointReadError as e:
    print(e)
    sys.exit(2)
print("loaded")
"""


def _load_limited(path):
    res = run_capped(
        "from egoexo_jax.convert.torch_zip import CheckpointReadError, load_torch_file\n",
        _LOAD,
        path,
        headroom=1 << 30,
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    return res.stdout.strip()


def test_zero_stride_tensors_cannot_multiply_memory_beyond_the_storages(tmp_path):
    """40,000 stride-0 views of one float, 2 MB each (each under the file's size): 80 GB asked."""
    path = tmp_path / "expand.pyth"
    n = 500_000
    spec = {f"t{i}": ("FloatStorage", "0", 1, 0, (n,), (0,)) for i in range(40_000)}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensors_pickle(spec))
        z.writestr("archive/data/0", np.ones(1, np.float32).tobytes())
    assert path.stat().st_size > 4 * n
    message = _load_limited(path)
    assert message.startswith(f"{path}: tensor 't")
    assert "more than the file's storages plus 16777216 bytes" in message, message


def _declare_size(data: bytes, name: bytes, declared: int) -> bytes:
    """The zip ``data`` with entry ``name``'s uncompressed size set to ``declared`` in its local and
    central headers (what a deflate bomb's headers say; the stream itself stays small)."""
    out = bytearray(data)
    local = out.index(b"PK\x03\x04")
    while local >= 0:
        if out[local + 30 : local + 30 + len(name)] == name:
            out[local + 22 : local + 26] = struct.pack("<I", declared)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central >= 0:
        if out[central + 46 : central + 46 + len(name)] == name:
            out[central + 24 : central + 28] = struct.pack("<I", declared)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_deflate_bomb_data_pkl_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb_pkl.pyth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", tensors_pickle({"w": ("FloatStorage", "0", 4, 0, (4,), (1,))}))
        z.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
    path.write_bytes(_declare_size(path.read_bytes(), b"archive/data.pkl", 3 << 30))
    message = _load_limited(path)
    assert message == (
        f"{path}: entry 'archive/data.pkl' declares 3221225472 bytes unpacked, more than 67108864 bytes; "
        f"expected a torch.save archive (stored entries no larger than the {path.stat().st_size}-byte file)"
    )


def test_entries_declaring_more_than_the_file_in_all_are_refused(tmp_path):
    """Each storage entry under the file's size, together far over it."""
    path = tmp_path / "many.pyth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "archive/data.pkl", tensors_pickle({f"w{i}": ("ByteStorage", str(i), 1, 0, (1,), (1,)) for i in range(50)})
        )
        for i in range(50):
            z.writestr(f"archive/data/{i}", bytes(1))
    data = path.read_bytes()
    for i in range(50):
        data = _declare_size(data, f"archive/data/{i}".encode(), len(data) - 1)
    path.write_bytes(data)
    with pytest.raises(CheckpointReadError, match=r"entries declare \d+ bytes unpacked in all, more than twice"):
        load_torch_file(path)


def test_pickle_memo_bomb_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "memo.pyth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02]r\x00\x00\x00\x40.")
    message = _load_limited(path)
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint")
    assert "memo index 1073741824" in message, message


def test_shared_tensor_is_built_once_and_views_within_the_budget_load(tmp_path):
    """A checkpoint whose views overlap a little (an expanded bias) still loads."""
    path = tmp_path / "ok.pyth"
    flat = np.arange(16, dtype=np.float32)
    write_pyth(path, {"0": flat}, {"w": ("0", 0, (4, 4), (4, 1)), "b": ("0", 0, (3, 4), (0, 1))})
    state = load_torch_file(path)["model_state"]
    np.testing.assert_array_equal(state["b"], np.tile(flat[:4], (3, 1)))
    np.testing.assert_array_equal(state["w"], flat.reshape(4, 4))
