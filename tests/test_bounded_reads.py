"""Reading bounds: pickle memo/nesting pre-scan, frame pixel caps and non-regular files (issue 24)."""

import io
import os
import pathlib
import pickle
import struct
import threading

import numpy as np
import pytest
from PIL import Image

from egoexo_jax import storage
from egoexo_jax.cli import InputError
from egoexo_jax.data import frames, restricted_pickle
from egoexo_jax.data.video import DecodeError, VideoReader, read_jpeg_frames

import fake_media as fm
from capped_run import run_capped

REPO = pathlib.Path(__file__).resolve().parents[1]
MEMO_BOMB = b"\x80\x02}r\x00\x00\x00\x40" + b"N" * 432 + b"."  # 441 bytes; LONG_BINPUT 2**30

# ------------------------------------------------------------------------------ pickles


def test_memo_bomb_is_refused_under_a_memory_limit(tmp_path):
    """In a process capped 512 MiB above its imports, the 16 GiB memo request never happens."""
    path = tmp_path / "scores.pkl"
    path.write_bytes(MEMO_BOMB)
    assert len(MEMO_BOMB) == 441
    res = run_capped(
        "from egoexo_jax.data import restricted_pickle\n",
        "try:\n"
        "    restricted_pickle.load(open(sys.argv[1], 'rb'))\n"
        "except restricted_pickle.PickleLimitError as e:\n"
        "    print(e)\n",
        path,
        headroom=512 << 20,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("memo index 1073741824 at byte 8 after only 3 opcodes"), res.stdout


@pytest.mark.parametrize("depth, refused", [(900, False), (1500, True)])
def test_nesting_deeper_than_the_bound_is_refused(depth, refused):
    nested = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    if refused:
        with pytest.raises(restricted_pickle.PickleLimitError, match="nested more than 1000 levels"):
            restricted_pickle.loads(nested)
    else:
        out = restricted_pickle.loads(nested)
        for _ in range(depth - 1):
            (out,) = out
        assert out == []


def test_payload_longer_than_the_data_is_refused():
    with pytest.raises(
        restricted_pickle.PickleLimitError,
        match=r"a payload of 6442450944 bytes at byte 11 runs past the end of the data \(15 bytes\)",
    ):
        restricted_pickle.loads(b"\x80\x04\x8e" + struct.pack("<Q", 6 << 30) + b"abc.")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_ordinary_pickles_pass_the_scan_unchanged(protocol):
    value = {f"k{i}": np.arange(i + 3, dtype=np.float32) for i in range(300)}
    value["shared"] = [value["k1"], value["k1"], ("x", b"y" * 70000, {1: None})]
    out = restricted_pickle.loads(pickle.dumps(value, protocol=protocol))
    assert out.keys() == value.keys()
    np.testing.assert_array_equal(out["k299"], value["k299"])
    assert out["shared"][2] == ("x", b"y" * 70000, {1: None})


def test_npy_header_claiming_more_than_the_file_is_refused(tmp_path):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    buffer.write(bytes(16))
    (tmp_path / "v.npy").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match=r"v.npy: header declares \(1099511627776,\) float32 \(4398046511104 bytes\)"):
        restricted_pickle.load_npy(tmp_path / "v.npy")


# ------------------------------------------------------------------------------ frames and videos


def _jpeg_claiming(width, height):
    """A valid small JPEG whose SOF0 header claims ``width x height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_frame_header_over_the_pixel_cap_is_a_decode_error_naming_the_file(tmp_path):
    """Was PIL's DecompressionBombError (exit 1, file not named); now a counted-skip DecodeError."""
    path = tmp_path / "v-000001.jpg"
    path.write_bytes(_jpeg_claiming(9000, 9000))
    with pytest.raises(DecodeError) as err:
        read_jpeg_frames([str(path)], [0])
    assert str(err.value) == (
        f"frame {path} is 9000x9000 pixels, more than the limit of 67108864 (8192x8192); expected a video frame"
    )
    path.write_bytes(_jpeg_claiming(30000, 30000))  # over PIL's own limit: refused inside Image.open
    with pytest.raises(DecodeError, match=f"^frame {path} is larger than the limit of 67108864 pixels"):
        read_jpeg_frames([str(path)], [0])
    with pytest.raises(DecodeError, match="^frame <bytes> is larger than the limit of 67108864 pixels"):
        frames.decode_jpeg(path.read_bytes())
    path.write_bytes(_jpeg_claiming(16, 16))
    assert read_jpeg_frames([str(path)], [0]).shape == (1, 16, 16, 3)


def _finishes(fn, seconds=20):
    """Runs ``fn`` in a thread; returns what it raised (the test fails if it blocks)."""
    box = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked on a FIFO"
    return box.get("error")


def test_fifo_frame_and_video_are_decode_errors_not_a_hang(tmp_path):
    fifo = tmp_path / "v-000001.jpg"
    os.mkfifo(fifo)
    err = _finishes(lambda: read_jpeg_frames([str(fifo)], [0]))
    assert isinstance(err, DecodeError), err
    assert (
        str(err) == f"cannot read frame {fifo}: {fifo}: is a FIFO, not a regular file; expected a regular file to read"
    )
    video = tmp_path / "clip.mp4"
    os.mkfifo(video)
    err = _finishes(lambda: VideoReader(str(video)))
    assert isinstance(err, DecodeError) and "is a FIFO, not a regular file" in str(err), err
    err = _finishes(lambda: storage.read_bytes(str(fifo)))
    assert isinstance(err, InputError) and isinstance(err, OSError), err


def test_video_over_the_pixel_cap_is_a_decode_error(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    fm.write_video(path, 4)
    with VideoReader(str(path)) as reader:
        pixels = reader.width * reader.height
    monkeypatch.setattr(frames, "MAX_FRAME_PIXELS", pixels - 1)
    with pytest.raises(DecodeError, match=f"frame size of {path} is .* pixels, more than the limit of {pixels - 1}"):
        VideoReader(str(path))
