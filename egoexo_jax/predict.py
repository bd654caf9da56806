"""``python -m egoexo_jax.predict``: one video in, top-k classes (and interaction maps) out.

    python -m egoexo_jax.predict --checkpoint=CKPT --video=clip.mp4 [--top_k=5]
        [--labels=kinetics400|charades_ego|epic100_verb|epic100_noun|FILE] [--save_maps=maps.png]

(``egoexo-predict`` takes the same flags once the package is installed.)

``CKPT``: a training workdir (its newest checkpoint), a converted checkpoint directory or an
official ``.pyth``. Every path (checkpoint, video, labels file, PNG) may be a ``gs://`` URL. The
video is scored with multi-view testing (``--temporal_views`` clips x ``--spatial_crops`` crops,
PySlowFast's Kinetics placement), views combined by the mean of the head's test-time scores
(softmax) or their max (sigmoid heads). For Ego-Exo students ``--save_maps`` writes a PNG: every
frame of the middle view's clip (one column each, with its time in seconds) and, below it, the
predicted hand (red) and object (blue) probabilities of the map time step that frame falls in.
Errors are one line on stderr, exit status 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from egoexo_jax import cli, hostenv, storage
from egoexo_jax.cli import InputError, MissingFileError

PROG = "python -m egoexo_jax.predict"

DEFAULT_SAMPLING = {"slowfast": 2, "slow": 8, "mvit": 4}


def _sampling_rate(checkpoint: str, arch: str) -> int:
    cfg_path = storage.join(checkpoint, "config.json")  # a training workdir's experiment config
    if storage.isfile(cfg_path):
        return int(json.loads(storage.read_text(cfg_path))["data"]["sampling_rate"])
    return DEFAULT_SAMPLING.get(arch, 2)


def _num_frames(model_cfg) -> int:
    if model_cfg.arch == "mvit":
        return int(model_cfg.mvit.get("num_frames", 16))
    return int(model_cfg.num_frames)


def load_views(video: str, data_cfg):
    """All test views of one video as stacked pathway arrays, plus the middle view's frame times.

    A ``gs://`` video is read once into memory (one clip: small) and decoded from there."""
    import av  # pylint: disable=import-outside-toplevel

    from egoexo_jax.data import samples  # pylint: disable=import-outside-toplevel
    from egoexo_jax.data.sources import Item  # pylint: disable=import-outside-toplevel
    from egoexo_jax.data.video import DecodeError  # pylint: disable=import-outside-toplevel

    if not storage.isfile(video):
        raise MissingFileError(f"video not found, --video={video}, expected a video file")
    media = storage.read_bytes(video) if storage.is_url(video) else video
    try:
        with av.open(io.BytesIO(media) if isinstance(media, bytes) else media) as container:
            fps = float(container.streams.video[0].average_rate or data_cfg.target_fps)
    except (av.error.FFmpegError, IndexError) as e:
        raise InputError(
            f"not a readable video ({e}), --video={video}, expected a video file PyAV can decode"
        ) from None
    opts = samples.SampleOptions.from_config(data_cfg)
    name = storage.basename(video)
    item = Item(dataset="kinetics", key=name, video_id=os.path.splitext(name)[0], media=media)
    num_views = opts.num_ensemble_views * opts.num_spatial_crops
    middle = (opts.num_ensemble_views // 2) * opts.num_spatial_crops + min(1, opts.num_spatial_crops - 1)
    metas: Dict[int, dict] = {}
    views = []
    for v in range(num_views):

        def keep(meta, v=v):
            metas[v] = meta
            return {}

        try:
            views.append(
                samples.make_sample(
                    item,
                    samples.view_of(v, opts),
                    np.random.default_rng(v),
                    opts,
                    split="test",
                    video_level_labels=True,
                    aux_fn=keep,
                )
            )
        except DecodeError as e:
            raise InputError(f"{e}, --video={video}, expected a decodable video") from None
    stacked = {k: np.stack([s[k] for s in views]) for k in views[0] if k.startswith("pathway")}
    return stacked, metas[middle], middle, fps


def class_names(labels: Optional[str], num_classes: int) -> List[str]:
    if not labels:
        return [f"class {i}" for i in range(num_classes)]
    from egoexo_jax.labels import load_class_names  # pylint: disable=import-outside-toplevel

    names = load_class_names(labels)
    if len(names) != num_classes:
        raise InputError(
            f"{len(names)} class names, --labels={labels}, expected {num_classes} (one per class of the model)"
        )
    return names


TITLE = "rows: frame | hand probability (red) | object probability (blue); 0..1 = transparent..opaque"


def _wrap(draw, text: str, width: int) -> List[str]:
    """``text`` split at spaces into lines no wider than ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def maps_picture(frames: np.ndarray, maps: np.ndarray, times: np.ndarray, cell: Optional[int] = None):
    """PIL image: row 0 every clip frame, row 1 its hand (red) overlay, row 2 its object (blue)
    overlay, one column per frame; the title wraps to the picture's width.

    Args:
      frames: ``[T, H, W, 3]`` float in [0, 1]; maps: ``[T_map, h, w, 2]`` probabilities (frame ``i``
        shows map ``i * T_map // T``); times: ``[T]`` seconds.
      cell: column width in pixels (default: 160, narrower for long clips, at least 64).
    """
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

    t, t_map = frames.shape[0], maps.shape[0]
    cell = cell or max(64, min(160, 2400 // max(t, 1)))
    width = t * cell
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title = _wrap(draw, TITLE, width - 8)
    header, footer = 8 + 14 * len(title), 16
    canvas = Image.new("RGB", (width, header + 3 * cell + footer), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title):
        draw.text((4, 4 + 14 * k), line, fill="black")
    for i in range(t):
        base = (
            np.asarray(
                Image.fromarray((np.clip(frames[i], 0, 1) * 255).astype(np.uint8)).resize((cell, cell)), np.float32
            )
            / 255
        )
        m = i * t_map // t
        for row, (channel, colour) in enumerate(((None, None), (0, (1.0, 0.1, 0.1)), (1, (0.1, 0.3, 1.0)))):
            img = base
            if channel is not None:
                prob = np.asarray(
                    Image.fromarray(maps[m, ..., channel].astype(np.float32)).resize((cell, cell), Image.NEAREST)
                )[..., None]
                img = base * (1 - 0.7 * prob) + 0.7 * prob * np.asarray(colour, np.float32)
            canvas.paste(Image.fromarray((img * 255).astype(np.uint8)), (i * cell, header + row * cell))
        label = f"t = {times[i]:.2f} s" if cell >= 90 else f"{times[i]:.2f}s"
        draw.text((i * cell + 4, header + 3 * cell + 2), label, fill="black")
    return canvas


def predict(
    checkpoint: str,
    video: str,
    *,
    top_k: int = 5,
    labels: Optional[str] = None,
    temporal_views: int = 10,
    spatial_crops: int = 3,
    sampling_rate: Optional[int] = None,
    crop: Optional[int] = None,
    save_maps: Optional[str] = None,
) -> Dict[str, Any]:
    """Scores one video; returns ``{"top": [(name, score)], "scores": [C], "maps_png": path|None}``."""
    import jax  # pylint: disable=import-outside-toplevel

    from egoexo_jax import models  # pylint: disable=import-outside-toplevel
    from egoexo_jax.checkpoint import pretrained  # pylint: disable=import-outside-toplevel
    from egoexo_jax.data.config import default_data_config  # pylint: disable=import-outside-toplevel

    storage.check(video, "--video")
    if save_maps:
        storage.check(save_maps, "--save_maps")
    model_cfg, variables, what = pretrained.load_pretrained(checkpoint, flag="--checkpoint")
    if save_maps and not model_cfg.interaction_head:  # before scoring any view
        raise InputError(
            f"{what} has no interaction-map head, --save_maps={save_maps}, expected an Ego-Exo "
            "student checkpoint (or no --save_maps)"
        )
    model = models.build(model_cfg)
    data_cfg = default_data_config("kinetics")
    data_cfg.update(
        num_frames=_num_frames(model_cfg),
        arch=model_cfg.arch,
        alpha=int(model_cfg.alpha),
        sampling_rate=sampling_rate or _sampling_rate(checkpoint, model_cfg.arch),
        test_crop_size=crop or int(model_cfg.crop_size),
        num_ensemble_views=temporal_views,
        num_spatial_crops=spatial_crops,
    )
    views, meta, middle, fps = load_views(video, data_cfg)
    pathways = [views[f"pathway{i}"] for i in range(len(views))]
    outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, pathways)
    probs = outputs["probs"][0] if isinstance(outputs["probs"], tuple) else outputs["probs"]
    probs = np.asarray(probs)
    scores = probs.max(0) if model_cfg.head_act == "sigmoid" else probs.mean(0)
    names = class_names(labels, scores.shape[0])
    order = np.argsort(-scores)[:top_k]
    result: Dict[str, Any] = {
        "checkpoint": what,
        "top": [(names[i], float(scores[i])) for i in order],
        "scores": scores,
        "num_views": probs.shape[0],
        "maps_png": None,
    }
    if save_maps:
        maps = jax.nn.sigmoid(np.asarray(outputs["interaction_logits"][middle], np.float32))
        # Every frame of the clip: SlowFast's fast pathway holds them all, other models one pathway.
        frames = views[f"pathway{len(views) - 1}"][middle] * data_cfg.std + data_cfg.mean
        indices = np.asarray(meta["frame_indices"])
        times = indices[np.floor(np.linspace(0, len(indices) - 1, frames.shape[0])).astype(int)] / fps
        picture = maps_picture(frames, np.asarray(maps), times)
        storage.atomic_write(save_maps, lambda f: picture.save(f, format="PNG"))
        result["maps_png"] = save_maps
    return result


def _define_flags(fv: flags.FlagValues, argv: List[str]) -> None:  # pylint: disable=unused-argument
    flags.DEFINE_string("checkpoint", None, "Training workdir, converted directory or .pyth.", flag_values=fv)
    flags.DEFINE_string("video", None, "The video to classify.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Classes in the table.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string(
        "labels",
        None,
        "Class names: kinetics400 | charades_ego | epic100_verb | epic100_noun | a file with one name per line.",
        flag_values=fv,
    )
    flags.DEFINE_string("save_maps", None, "PNG path for the interaction maps (Ego-Exo students).", flag_values=fv)
    flags.DEFINE_integer("temporal_views", 10, "Clips along the video.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("spatial_crops", 3, "Crops per clip.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "sampling_rate",
        None,
        "Frame stride (default: the checkpoint's config, else the architecture's recipe).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer("crop", None, "Test crop (default: the model's crop size).", lower_bound=1, flag_values=fv)


def _predict(fv: flags.FlagValues) -> int:
    res = predict(
        fv.checkpoint,
        fv.video,
        top_k=fv.top_k,
        labels=fv.labels,
        temporal_views=fv.temporal_views,
        spatial_crops=fv.spatial_crops,
        sampling_rate=fv.sampling_rate,
        crop=fv.crop,
        save_maps=fv.save_maps,
    )
    width = max(len(n) for n, _ in res["top"]) + 2
    print(f"{res['checkpoint']}: {fv.video}, {res['num_views']} views")
    print(f"{'rank':>4}  {'class'.ljust(width)}score")
    for rank, (name, score) in enumerate(res["top"], 1):
        print(f"{rank:>4}  {name.ljust(width)}{score:.4f}")
    if res["maps_png"]:
        print(f"interaction maps: {res['maps_png']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.run_command(PROG, __doc__, _define_flags, _predict, argv, required=("checkpoint", "video"))


def run() -> None:
    """``egoexo-predict`` and ``python -m egoexo_jax.predict``."""
    hostenv.prepare_process()
    sys.exit(main())


if __name__ == "__main__":
    run()
