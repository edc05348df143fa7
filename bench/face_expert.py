"""The face CNN, the blendshape expert and their combination on people held out of both: one table.

    python -m bench.face_expert [--face-model face-cnn] [--expert blendshape-expert] [--json FILE]

For each labelled photo set (KDEF, CK+, SFEW under the data folder, cropped exactly as the video
pipeline crops faces; ``corpora.expressions``, cached under .cache/) the people of fold ``--fold``
(0 of 5: the fold every face trainer holds out) are scored: the face model as ``analyze`` builds it
(``encoders.load_predictor``, its test-time augmentation), the expert alone on the photos the face
landmarker reads, the CNN on those same photos, and the face modality's combination
``(1 - w) CNN + w expert``. ``w`` is chosen for ``--face-model`` on the people of ``--select-fold``
(1: a training fold of the expert, never the held-out one), as the expert's trainer chose the
shipped weight for face-cnn 2.0.0 (with the even rows of a 2,000-face FER+ PublicTest pick: web
faces are one set among them); the table also gives the combination at the expert file's weight.
KDEF is scored on frontal and half-profile photos (the issue's held-out figures) and on all five
angles; the odd rows of the PublicTest pick (FER+ majority labels) show what the combination does
to web faces.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("bench")
SETS = ("faces/kdef", "faces/ckplus48", "faces/sfew")
FER_SEED = 1   # the expert trainer's PublicTest pick (its config's seed 0, + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--face-model", default="face-cnn", help="face CNN: registry name or .safetensors (default face-cnn)")
    p.add_argument("--expert", default="blendshape-expert", help="blendshape expert: registry name or file")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold", type=int, default=0, help="the held-out people scored (default 0)")
    p.add_argument("--select-fold", type=int, default=1, help="the people the combination weight is chosen on")
    p.add_argument("--json", help="also write every report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.select_fold == args.fold:
        p.error("--select-fold must differ from --fold (the weight is never chosen on the people scored)")

    import torch

    torch.set_num_threads(1)
    from emotion_pipeline.corpora.expressions import (FER_SELECT_MAX, FER_SELECT_NPZ, choosing_rows, fer_expressions,
                                                      photo_expressions)
    from emotion_pipeline.corpora.face_images import PROFILE_ANGLES
    from emotion_pipeline.data import data_path
    from emotion_pipeline.encoders import load_predictor, probabilities
    from emotion_pipeline.evaluate.faces import expert_reports
    from emotion_pipeline.landmarks import load_landmarker
    from emotion_pipeline.models import registry
    from emotion_pipeline.models.blendshape_expert import choose_weight, probs_of_readings

    predictor = load_predictor("face", args.face_model, device=torch.device("cpu"), offline=True)
    expert = registry.load(args.expert, kind="expression", offline=True)
    file_weight = float((expert.meta.get("combination") or {}).get("weight", 0.0))
    views, select = {}, []
    with load_landmarker() as landmarker:
        for name in SETS:
            ph = photo_expressions(data_path(name), n_folds=args.folds, landmarker=landmarker)
            cnn = probabilities(predictor, ph.crops)
            r = ph.readings
            exp = probs_of_readings(expert.module, r.blendshapes, r.landmarks, r.found)
            frontal = np.asarray([a not in PROFILE_ANGLES for a in ph.images.angles])
            rows = (ph.folds == args.select_fold) & frontal
            select.append((cnn[rows], exp[rows], r.found[rows], ph.labels[rows]))
            held = ph.folds == args.fold
            label = {"kdef": "KDEF frontal+half", "ckplus48": "CK+", "sfew": "SFEW"}.get(ph.name, ph.name)
            views[label] = (held & frontal, ph.labels, cnn, exp, r.found)
            if (held & ~frontal).any():
                views["KDEF all angles" if ph.name == "kdef" else f"{label} all"] = (held, ph.labels, cnn, exp, r.found)
        fer = fer_expressions(data_path(FER_SELECT_NPZ), max_faces=FER_SELECT_MAX, seed=FER_SEED, landmarker=landmarker)
        r = fer.readings
        cnn, exp = probabilities(predictor, fer.images), probs_of_readings(expert.module, r.blendshapes, r.landmarks, r.found)
        choosing = choosing_rows(len(fer.majority)) & (fer.majority >= 0)
        select.append((cnn[choosing], exp[choosing], r.found[choosing], fer.majority[choosing]))
        views["FER+ PublicTest (odd)"] = (~choosing_rows(len(fer.majority)) & (fer.majority >= 0), fer.majority, cnn, exp,
                                          r.found)
    weight, by_weight = choose_weight(select)
    results = {"face_model": predictor.describe(), "expert": expert.describe(), "folds": args.folds, "fold": args.fold,
               "select_fold": args.select_fold, "weight": weight, "file_weight": file_weight,
               "select_mean_accuracy_by_weight": dict(zip((f"{w:.2f}" for w in np.linspace(0, 1, len(by_weight))),
                                                          (round(a, 4) for a in by_weight))), "sets": {}}
    for label, (rows, labels, cnn, exp, found) in views.items():
        results["sets"][label] = expert_reports(labels[rows], cnn[rows], exp[rows], found[rows], weight)
        if file_weight != weight:
            results["sets"][label]["combined_at_file_weight"] = expert_reports(
                labels[rows], cnn[rows], exp[rows], found[rows], file_weight)["combined"]
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def table(results: dict) -> str:
    """The comparison as text: accuracy / UAR per set, then recall and read-as-neutral per class."""
    from emotion_pipeline.labels import LABELS

    fm, ex = results["face_model"], results["expert"]
    lines = [f"face model {fm.get('name')} {fm.get('version') or ''} ({(fm.get('sha256') or '')[:12]}), expert "
             f"{ex.get('name')} {ex.get('version') or ''}; people of fold {results['fold']} of {results['folds']}; "
             f"combination weight {results['weight']:.2f} (chosen on fold {results['select_fold']}; "
             f"the expert file's: {results['file_weight']:.2f})",
             f"{'set':22s} {'n':>5s} {'read':>5s} | {'CNN acc':>7s} {'UAR':>5s} | {'expert*':>7s} {'UAR':>5s} | "
             f"{'CNN*':>5s} | {'comb acc':>8s} {'UAR':>5s}"]
    for label, s in results["sets"].items():
        lines.append(f"{label:22s} {s['n']:5d} {s['read']:5d} | {s['cnn']['accuracy']:7.3f} {s['cnn']['uar']:5.3f} | "
                     f"{s['expert']['accuracy']:7.3f} {s['expert']['uar']:5.3f} | {s['cnn_on_read']['accuracy']:5.3f} | "
                     f"{s['combined']['accuracy']:8.3f} {s['combined']['uar']:5.3f}")
    lines.append("* on the photos the landmarker read")
    lines.append("per-class recall CNN / expert* / combined, and how many of each class were read as neutral:")
    for label, s in results["sets"].items():
        cells = []
        for c in LABELS:
            rec = [s[k]["per_class_recall"].get(c) for k in ("cnn", "expert", "combined")]
            if rec[0] is None:
                continue
            neutral = "" if c == LABELS[0] else " n{}/{}/{}".format(*(s[k]["read_as_neutral"].get(c, 0)
                                                                      for k in ("cnn", "expert", "combined")))
            cells.append(f"{c} {'/'.join('-' if v is None else f'{v:.2f}' for v in rec)}{neutral}")
        lines.append(f"  {label}: " + "; ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
