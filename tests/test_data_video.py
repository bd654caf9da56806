"""PyAV video reading and JPEG frame folders (egoexo_jax/data/video.py) on generated media."""

import os

import numpy as np
import pytest

from egoexo_jax.data.video import (
    DecodeError,
    FrameSequence,
    VideoReader,
    epic_frame_path,
    epic_frame_sequence,
    read_jpeg_frames,
    read_video_clip,
)
from egoexo_jax.demo_data import media

import fake_media as fm

N = 150


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {
        # one keyframe every 25 frames, no B-frames
        "gop25": (root / "gop25.mp4", dict(gop=25)),
        # B-frames, 25 fps, time base 1/12800
        "bframes": (root / "bframes.mp4", dict(preset="medium", fps=25, gop=30)),
        # Matroska: time base 1/1000, pts != frame number; must still work (docs/method.md#video-frame-numbers)
        "mkv": (root / "clip.mkv", dict(preset="medium", crf=10, fps=24)),
        # one keyframe for the whole video
        "onekey": (root / "onekey.mp4", dict(gop=1000)),
    }
    for path, kwargs in paths.values():
        fm.write_video(path, N, **kwargs)
    return {k: str(v[0]) for k, v in paths.items()}


def codes(frames):
    return [fm.read_code(f) for f in frames]


def test_decoded_frames_equal_the_written_frames(videos):
    with VideoReader(videos["gop25"]) as r:
        assert (r.num_frames, r.fps, r.height, r.width) == (N, 30.0, 48, 64)
        got = r.read(np.arange(N))
    want = np.stack([fm.coded_frame(i) for i in range(N)])
    assert got.dtype == np.uint8 and got.shape == (N, 48, 64, 3)
    assert np.abs(got.astype(int) - want).max() <= 2  # crf 0: only the YUV round trip


@pytest.mark.parametrize("name", ["gop25", "bframes", "mkv", "onekey"])
def test_random_index_sets_come_back_in_order(videos, name):
    rng = np.random.default_rng(0)
    with VideoReader(videos[name], seek_gap=20) as r:
        for _ in range(12):
            idx = rng.integers(0, N, size=6)
            if rng.uniform() < 0.5:
                idx = np.sort(idx)
            assert codes(r.read(idx)) == idx.tolist()


def test_clamping_and_repeats(videos):
    with VideoReader(videos["gop25"]) as r:
        assert codes(r.read([149, 400, -3, 7, 7])) == [149, 149, 0, 7, 7]


def test_several_clips_in_one_pass(videos):
    with VideoReader(videos["bframes"]) as r:
        clips = r.read_clips([[5, 7, 9], [120, 122], [6, 5]])
    assert [codes(c) for c in clips] == [[5, 7, 9], [120, 122], [6, 5]]


def test_partial_decode_stops_at_the_last_wanted_frame(videos, monkeypatch):
    converted = []
    import av  # pylint: disable=g-import-not-at-top

    original = av.VideoFrame.to_ndarray

    def counting(self, *a, **k):
        converted.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    with VideoReader(videos["gop25"]) as r:
        decoded = []
        orig_index = r._index_of
        r._index_of = lambda frame: decoded.append(orig_index(frame)) or orig_index(frame)
        r.read([100, 102, 104])
    assert len(converted) == 3  # only wanted frames become RGB arrays
    assert min(decoded) >= 75 and max(decoded) == 104  # seek to keyframe 100's GOP, stop at 104


def test_bytes_source_and_bgr(videos):
    data = open(videos["gop25"], "rb").read()
    rgb = read_video_clip(data, [3, 4])
    np.testing.assert_array_equal(read_video_clip(videos["gop25"], [3, 4], bgr=True), rgb[..., ::-1])
    assert codes(rgb) == [3, 4]


def test_bad_video_files_raise_decode_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    fm.write_video(tmp_path / "ok.mp4", 30)
    whole = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 3])
    for name in ["missing.mp4", "empty.mp4", "junk.mp4", "cut.mp4"]:
        with pytest.raises(DecodeError):
            read_video_clip(str(tmp_path / name), [0, 1])
    with pytest.raises(DecodeError):
        read_video_clip(b"", [0])


def test_jpeg_folders_charades_and_epic_layouts(tmp_path):
    images = [fm.coded_frame(i) for i in range(1, 13)]
    charades = [str(tmp_path / "rgb" / "AB12EGO" / f"AB12EGO-{i:06d}.jpg") for i in range(1, 13)]
    media.write_jpegs(charades, images)
    seq = FrameSequence.from_paths(charades)
    assert seq.template is not None and len(seq) == 12 and seq[11] == charades[11]
    frames = read_jpeg_frames(seq, [0, 2, 2, 11, 40])
    assert codes(frames) == [1, 3, 3, 12, 12]
    np.testing.assert_array_equal(read_jpeg_frames(seq, [4], bgr=True), read_jpeg_frames(seq, [4])[..., ::-1])
    # EPIC: absolute 1-based frame numbers in the file name.
    assert epic_frame_path("/d", "P01", "P01_11", 7) == "/d/P01/rgb_frames/P01_11/frame_0000000007.jpg"
    epic = epic_frame_sequence(str(tmp_path / "epic"), "P01", "P01_11", 5, 9)
    media.write_jpegs([epic[i] for i in range(len(epic))], [fm.coded_frame(n) for n in range(5, 10)])
    assert codes(read_jpeg_frames(epic, [0, 4])) == [5, 9]
    assert os.path.basename(epic[0]) == "frame_0000000005.jpg"
    # Encoded bytes work the same as paths.
    blobs = [fm.encode_jpeg(fm.coded_frame(i)) for i in range(4)]
    assert codes(read_jpeg_frames(blobs, [3, 1])) == [3, 1]


def test_missing_or_corrupt_jpeg_raises(tmp_path):
    paths = [str(tmp_path / f"v-{i:06d}.jpg") for i in range(1, 4)]
    media.write_jpegs(paths[:2], [fm.coded_frame(0)] * 2)
    with pytest.raises(DecodeError, match="missing"):
        read_jpeg_frames(FrameSequence.from_paths(paths), [0, 2])
    with pytest.raises(DecodeError):
        read_jpeg_frames([b"not a jpeg"], [0])


def test_frame_sequence_keeps_irregular_lists():
    paths = ["a/x-000001.jpg", "a/x-000003.jpg"]
    seq = FrameSequence.from_paths(paths)
    assert seq.template is None and [seq[0], seq[1]] == paths


def test_stream_cut_short_is_a_decode_error_not_a_repeated_frame(tmp_path):
    """An mp4 with its index at the front, cut after a third of its bytes: the container still
    promises all frames, the stream ends early. Frames it has come back; later ones raise."""
    whole = tmp_path / "whole.mp4"
    fm.write_video(whole, 60, faststart=True)
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with VideoReader(cut) as r:
        assert r.num_frames == 60
        assert codes(r.read([0, 3, 6])) == [0, 3, 6]
        with pytest.raises(DecodeError, match=r"cut.mp4 ends at frame \d+ but frame \d+ was requested .*truncated"):
            r.read(np.arange(0, 60, 3))
    with VideoReader(whole) as r:  # the uncut file reads every frame
        assert codes(r.read(np.arange(0, 60, 3))) == list(range(0, 60, 3))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    """Frames come back as a player shows them: rotated counter-clockwise by the stored angle."""

    def marked(i, h, w):
        image = fm.coded_frame(i, h, w)
        image[-8:, :8] = (255, 0, 0)  # a red corner makes the orientation unambiguous
        return image

    path = tmp_path / f"rot{rotation}.mp4"
    fm.write_video(path, 10, image_fn=marked, rotation=rotation)
    with VideoReader(path) as r:
        got = r.read([4])[0].astype(int)
    want = np.rot90(marked(4, 48, 64), k=(rotation // 90) % 4).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 3  # lossless but for the YUV round trip of the red corner
    if rotation == 180:
        assert np.abs(got - marked(4, 48, 64)).mean() > 30  # unrotated would be far off


def test_clip_longer_than_its_video_is_flagged_padded(tmp_path):
    from egoexo_jax.data import samples
    from egoexo_jax.data.sources import Item

    opts = samples.SampleOptions(
        dataset="kinetics", num_frames=8, sampling_rate=4, train_crop_size=32, jitter_scales=(48, 48), flip_prob=0.0
    )
    for n, padded in ((20, True), (32, False), (40, False)):  # the clip spans 8 * 4 = 32 frames
        path = tmp_path / f"v{n}.mp4"
        fm.write_video(path, n)
        clip = samples.decode_clip(
            Item("kinetics", path.name, path.stem, str(path)), samples.View("train"), np.random.default_rng(0), opts
        )
        assert clip.padded is padded
        assert clip.positions.max() <= n - 1
    frames = [str(tmp_path / "f.jpg")] * 10
    media.write_jpegs(frames[:1], [fm.coded_frame(0)])
    item = Item("charades_ego", "x", "x", frames)
    clip = samples.decode_clip(item, samples.View("train"), np.random.default_rng(0), opts)
    assert clip.padded  # 10 frames, a clip of (8 - 1) * 4 + 1 = 29
