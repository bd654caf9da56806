"""Train-step time of the demo's Ego-Exo student with offline vs online teachers (prints JSON).

Offline: the ego / object teacher logits and the interaction maps arrive with the batch (the
official pre-computed files). Online: a frozen 2-way video classifier (the demo student's size)
and a 2D ResNet object teacher (``--object-depth``, ``--object-width``) run inside the same jitted
step on ``--object-frames`` frames. Same batch, same student, same device.

    python benchmarks/distillation_step.py [--batch 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from egoexo_jax import config_schema, demo, hostenv, models, optim, recipe, sharding, teacher_loading, train  # noqa: E402  # noqa: E402
from egoexo_jax.models import teachers as teachers_lib  # noqa: E402

demo_config = recipe.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "demo.py"))


def _time(step, state, batch, teacher_vars, steps):
    state, m = step(state, batch, teacher_vars)
    jax.block_until_ready(m)  # compile + first step
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch, teacher_vars)
    jax.block_until_ready(m)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--object-depth", type=int, default=50)
    parser.add_argument("--object-width", type=int, default=64)
    parser.add_argument("--object-frames", type=int, default=8)
    args = parser.parse_args()

    d = demo_config.demo_settings()
    c = config_schema.base_config()
    c.model = demo.student(8, egoexo=True, demo=d)
    c.data.update(num_frames=d.num_frames, train_crop_size=d.crop)
    mesh = sharding.make_mesh(1)
    model = models.build(c.model)
    params = jax.eval_shape(lambda: train.init_variables(model, c, 0))["params"]
    tx = optim.make_optimizer(c, 100, params)
    state, _ = train.create_train_state(c, model, tx, mesh)

    rng = np.random.default_rng(0)
    b, t, s = args.batch, d.num_frames, d.crop
    grid = s // model.feature_stride
    batch = {
        "pathway0": rng.normal(size=(b, t // 4, s, s, 3)).astype(np.float32),
        "pathway1": rng.normal(size=(b, t, s, s, 3)).astype(np.float32),
        "label": rng.integers(0, 8, b).astype(np.int32),
        "interaction_target": rng.uniform(size=(b, t // 4, grid, grid, 2)).astype(np.float32),
    }
    offline = dict(
        batch,
        ego_target=rng.normal(size=(b, 2)).astype(np.float32),
        object_target=rng.normal(size=(b, 1000)).astype(np.float32),
    )
    weights = {"ce": 0.5, "ego": 0.1, "object": 0.5, "hand": 1.0, "object_map": 1.0}
    common = dict(model=model, tx=tx, schedule=optim.make_schedule(c, 100), loss_weights=weights, arch="slowfast")
    copy = lambda x: jax.tree.map(jnp.copy, x)  # noqa: E731

    step_off = train.make_train_step(mesh, **common)
    t_off = _time(step_off, copy(state), sharding.global_batch(offline, mesh), {}, args.steps)

    ego_cfg = config_schema.base_config()
    ego_cfg.model = demo.student(2, egoexo=False, demo=d)
    ego_cfg.data.update(num_frames=d.num_frames, train_crop_size=d.crop)
    ego_module = models.build(ego_cfg.model)
    ego_vars = train.init_variables(ego_module, ego_cfg, 1)
    obj_module, obj_vars = teacher_loading.load_object_teacher(
        "", depth=args.object_depth, width=args.object_width, seed=2
    )
    online = teachers_lib.OnlineTeachers(
        ego=teachers_lib.EgoTeacher.from_module(ego_module),
        object=teachers_lib.ObjectTeacher(obj_module, num_frames=args.object_frames),
    )
    step_on = train.make_train_step(
        mesh, teacher_fn=functools.partial(teachers_lib.online_teacher_targets, online), **common
    )
    t_on = _time(
        step_on,
        copy(state),
        sharding.global_batch(batch, mesh),
        sharding.replicate({"ego": ego_vars, "object": obj_vars}, mesh),
        args.steps,
    )
    print(
        json.dumps(
            {
                "device": jax.devices()[0].device_kind,
                "batch": b,
                "frames": t,
                "crop": s,
                "object_teacher": f"resnet{args.object_depth} width {args.object_width} on {args.object_frames} frames",
                "offline_step_s": round(t_off, 4),
                "online_step_s": round(t_on, 4),
                "online_over_offline": round(t_on / t_off, 3),
            }
        )
    )


if __name__ == "__main__":
    hostenv.prepare_process()
    main()
