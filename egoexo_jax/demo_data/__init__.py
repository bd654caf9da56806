"""The bundled demo datasets: generated videos written in the official Ego-Exo on-disk formats.

:func:`egoexo_jax.demo_data.demo_sets.write_demo_data` writes a small "Kinetics" pre-training set
(H.264 mp4 videos, split lists, the three offline teacher signals) and a small egocentric
fine-tuning set in the Charades-Ego frame-list layout (JPEG folders, per-frame multi-labels,
hand-object detections). :func:`egoexo_jax.demo_data.epic55.write_epic55_data` writes an
egocentric set in the EPIC-Kitchens-55 layout. The real readers (``data/kinetics.py``,
``charades_ego.py``, ``epic_kitchens.py``, ``teacher_scores.py``, ``handobj.py``, the pipelines)
read them unchanged.

Modules, one job each:

* ``scene``: the per-frame ground truth of a video (``Scene``) and the ingredients every scene
  shares (background texture, camera motion, object look, skin colour);
* ``pretrain_scenes``: the pre-training motion classes (``PRETRAIN_CLASSES``);
* ``finetune_scenes``: the egocentric hand-object interactions (``FINETUNE_CLASSES``);
* ``render``: scene -> frames and exact object / palm boxes;
* ``fake_teachers``: teacher logits and hand-object detections derived from a scene;
* ``media``: the mp4 and JPEG writers (also used by the tests' generated media);
* ``output``: idempotent output folders (a marker written last, leftovers removed);
* ``demo_sets``: the Kinetics + Charades-Ego demo sets; ``epic55``: the EPIC-55 set.

Determinism: everything is a function of the parameters. Video i draws its scene from
``np.random.default_rng([seed, dataset, i])`` and its teacher noise from ``[seed, dataset, i, 1]``
(dataset 0 = pre-training, 1 = egocentric, 3 = EPIC-55), so any video can be re-created on its
own (``pretrain_video``, ``finetune_video``). csv, pkl, npy and JPEG bytes are identical for the
same parameters, and so are the mp4 bytes: libx264 runs single-threaded with a fixed preset and
crf, and two generations of the full default set were byte-identical (all 13,650 files); the tests
assert it on a small set.
"""
