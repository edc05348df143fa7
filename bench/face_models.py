"""Face models side by side on real faces of people they never saw (issue 23).

    python -m bench.face_models --models face-cnn,runs/face_mixed/export.safetensors \
        [--sets faces/kdef,faces/ckplus48,faces/sfew] [--folds 5 --fold 0] [--peer runs/peer/fer_preds.json] \
        [--ensemble [--mix 0.5,0.6,0.7]] [--json out.json]

For each model (a registry name or a face_cnn .safetensors) and each labelled photo set (any folder
or CSV that ``evaluate faces`` reads; with ``--folds`` only the people of ``--fold``, the ones the
trainer holds out): accuracy, UAR, per-class recall and how many of each class are read as neutral,
with the photos detected and cropped exactly as the video pipeline crops faces (its precision, flip TTA, as
``analyze`` scores faces; ``--tta none`` for the centre crop). KDEF-style sets with head angles are reported twice: frontal + half
profile ("fh") and all angles. FER+ PublicTest majority accuracy (the trainer's selection split,
so a guide, not a result) when ``--fer`` names the .npz. ``--ensemble``: the mean of all models'
probabilities as one more row; with ``--mix`` (two models), one row per weight w of the second
model's probabilities ((1 - w) p1 + w p2). ``--peer``: another tool's predictions on the same photos
(``{set: {"rows": [{"path", "label"}], "preds": [label or null]}}``, null = no face found = wrong).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from emotion_pipeline.data import data_path
from emotion_pipeline.labels import LABEL_INDEX, LABELS
from emotion_pipeline.metrics import report

log = logging.getLogger("bench.face_models")
FH = ("frontal", "half_left", "half_right")


def _summary(labels: np.ndarray, pred: np.ndarray) -> dict:
    r = report(labels, pred, LABELS)
    return {k: r[k] for k in ("n", "accuracy", "uar", "per_class_recall", "read_as_neutral")}


def model_spec(model: str) -> tuple[str, str]:
    """``NAME[@PRECISION]`` -> (registry name or file, face_cnn precision: auto when not given)."""
    name, _, precision = model.partition("@")
    return name, precision or "auto"


def face_predictor(model: str, tta: str = "flip"):
    """The face model as ``analyze`` builds it, with the pipeline's flip TTA; ``model`` may end in
    ``@float32`` or ``@bfloat16`` (default: analyze's ``face_precision: auto``)."""
    import torch

    from emotion_pipeline.encoders import ShippedFace, load_predictor
    from emotion_pipeline.models.face_cnn import tta_mode

    name, precision = model_spec(model)
    predictor = load_predictor("face", name, device=torch.device("cpu"), offline=True)
    if isinstance(predictor, ShippedFace):
        predictor.tta = tta_mode(tta)
        predictor.precision = precision
    return predictor


def views(images) -> dict[str, np.ndarray]:
    """The row masks reported for one set: all photos, and frontal + half profile where angles are known."""
    out = {"all": np.ones(len(images), bool)}
    fh = np.asarray([a in FH for a in images.angles], bool)
    if set(images.angles) - set(FH) - {""} and fh.any():
        out["fh"] = fh
    return out


def mixtures(models: list[str], mix: list[float] | None) -> dict[str, list[float]]:
    """Row name -> weight per model: the plain mean, or (two models) one row per weight of the second."""
    if len(models) < 2:
        return {}
    if not mix:
        return {"mean(" + " + ".join(models) + ")": [1 / len(models)] * len(models)}
    if len(models) != 2:
        raise SystemExit("--mix needs exactly two --models")
    return {f"{1 - w:.2f} {models[0]} + {w:.2f} {models[1]}": [1 - w, w] for w in mix}


def run(models: list[str], sets: list[str], *, folds: int, fold: int, fer: str | None, peer: str | None,
        ensemble: bool, mix: list[float] | None = None, tta: str = "flip") -> dict:
    from emotion_pipeline.corpora.face_images import face_crops, labelled_images, person_folds, pipeline_detector
    from emotion_pipeline.faces import FACE_CROP_PX

    from emotion_pipeline.encoders import probabilities

    detector = pipeline_detector()
    predictors = {m: face_predictor(m, tta) for m in models}   # loaded once, used for every set
    peer_preds = json.loads(Path(peer).read_text()) if peer else {}
    results: dict = {"folds": folds, "fold": fold, "detector": detector.name, "tta": tta, "sets": {}}
    for name in sets:
        path = Path(name) if Path(name).exists() else data_path(name)
        images = labelled_images(path)
        if folds:
            images = images.take(person_folds(images.person_ids, folds) == fold)
        crops = face_crops(images, detector, FACE_CROP_PX, progress=True)
        probs = {m: probabilities(p, crops.crops) for m, p in predictors.items()}
        if ensemble:
            for row, ws in mixtures(models, mix).items():
                probs[row] = sum(w * probs[m] for w, m in zip(ws, models))
        set_key = path.name
        entry: dict = {"n": len(images), "missed_by_detector": int((~crops.detected).sum()), "models": {}}
        for label, p in probs.items():
            entry["models"][label] = {v: _summary(images.labels[mask], p[mask].argmax(1))
                                      for v, mask in views(images).items()}
        if set_key in peer_preds:
            pp = peer_preds[set_key]
            by_path = {str(Path(r["path"]).resolve()): pred for r, pred in zip(pp["rows"], pp["preds"])}
            got = [by_path.get(str(Path(p).resolve()), "missing") for p in images.paths]
            if "missing" not in got:
                # a photo in which the peer finds no face counts as wrong: predicted as an impossible class
                pred = np.asarray([LABEL_INDEX[g] if g else -1 for g in got])
                entry["models"]["peer"] = {v: {**_summary(images.labels[mask], np.where(pred[mask] < 0, 0, pred[mask])),
                                               "no_face": int((pred[mask] < 0).sum()),
                                               "accuracy": float((pred[mask] == images.labels[mask]).mean())}
                                           for v, mask in views(images).items()}
            else:
                log.warning("%s: the peer predictions do not cover these photos; left out", set_key)
        results["sets"][set_key] = entry
    if fer:
        results["ferplus_majority"] = ferplus_majority(models, fer, ensemble=ensemble, mix=mix,
                                                       tta="flip" if tta == "none" else tta)
    return results


def ferplus_majority(models: list[str], fer: str, *, ensemble: bool, tta: str = "flip",
                     mix: list[float] | None = None) -> dict[str, dict]:
    """FER+ majority accuracy per model (centre crop and the pipeline's flip TTA), and of the mean of
    the models' probabilities with ``ensemble``."""
    import torch

    from emotion_pipeline.corpora.faces import fer_faces, ferplus_votes, ferplus_votes_path
    from emotion_pipeline.metrics import ferplus_report
    from emotion_pipeline.models.face_cnn import predict_logits
    from emotion_pipeline.models.registry import load

    path = Path(fer) if Path(fer).exists() else data_path(fer)
    faces = fer_faces(path)
    votes = ferplus_votes(ferplus_votes_path(path), filenames=faces.filenames, n_rows=len(faces.labels))
    out, probs = {}, {}
    for m in models:
        name, precision = model_spec(m)
        module = load(name, device="cpu", kind="face").module
        for mode in (None, tta):
            logits = predict_logits(module, faces.images, mode, batch_size=512, precision=precision)
            probs[(m, mode)] = torch.softmax(logits, 1).numpy()
        out[m] = {mode or "none": ferplus_report(np.log(probs[(m, mode)] + 1e-9), votes, faces.labels)["majority"]["accuracy"]
                  for mode in (None, tta)}
    if ensemble:
        for row, ws in mixtures(models, mix).items():
            out[row] = {mode or "none": ferplus_report(np.log(sum(w * probs[(m, mode)] for w, m in zip(ws, models)) + 1e-9),
                                                       votes, faces.labels)["majority"]["accuracy"] for mode in (None, tta)}
    return out


def print_table(results: dict) -> None:
    short = {c: c[:4] for c in LABELS}
    for set_key, entry in results["sets"].items():
        for view in ("fh", "all"):
            rows = [(m, r[view]) for m, r in entry["models"].items() if view in r]
            if not rows:
                continue
            n = rows[0][1]["n"]
            print(f"\n{set_key} ({view}, {n} photos, fold {results['fold']} of {results['folds']}; "
                  f"detector missed {entry['missed_by_detector']})")
            print(f"  {'model':44s} {'acc':>6s} {'UAR':>6s}  " + " ".join(f"{short[c]:>5s}" for c in LABELS)
                  + "   read as neutral")
            for m, r in rows:
                rec = " ".join("    -" if r["per_class_recall"][c] is None else f"{r['per_class_recall'][c]:5.2f}"
                               for c in LABELS)
                ran = ", ".join(f"{short[c]} {k}" for c, k in r["read_as_neutral"].items() if k)
                extra = f" (no face {r['no_face']})" if "no_face" in r else ""
                print(f"  {m[-44:]:44s} {r['accuracy']:6.3f} {r['uar']:6.3f}  {rec}   {ran}{extra}")
    if "ferplus_majority" in results:
        print("\nFER+ PublicTest majority accuracy, centre crop / flip TTA (the trainer's selection split: a guide)")
        for m, a in results["ferplus_majority"].items():
            print(f"  {m[-44:]:44s} {a['none']:.4f} / {a['flip']:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated registry names or .safetensors files, each "
                    "optionally NAME@float32 or NAME@bfloat16 (default: auto, as analyze)")
    ap.add_argument("--sets", default="faces/kdef,faces/ckplus48,faces/sfew",
                    help="comma-separated photo folders / CSVs (relative names are under the data folder)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--fer", default="faces/fer2013/fer2013_publictest_3589.npz",
                    help="FER2013-format .npz with FER+ votes beside it ('none' to skip)")
    ap.add_argument("--peer", default=None)
    ap.add_argument("--ensemble", action="store_true")
    ap.add_argument("--mix", default=None, help="with --ensemble and two models: comma-separated weights of the second")
    ap.add_argument("--tta", default="flip", help="the photo sets' test-time augmentation: flip (the pipeline's), none, crops10")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run([m.strip() for m in args.models.split(",") if m.strip()],
                  [s.strip() for s in args.sets.split(",") if s.strip()], folds=args.folds, fold=args.fold,
                  fer=None if args.fer == "none" else args.fer, peer=args.peer, ensemble=args.ensemble,
                  mix=[float(w) for w in args.mix.split(",")] if args.mix else None, tta=args.tta)
    if args.json:
        from emotion_pipeline.fileio import atomic_write_text
        atomic_write_text(Path(args.json), json.dumps(results, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
