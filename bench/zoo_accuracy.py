"""Accuracy of a categorical model on the validation split its recipe holds out.

    python -m bench.zoo_accuracy DATA --model CHECKPOINT_OR_NAME [--compact]

DATA: the HDF5 files the model was trained on (e.g. FER2013 packed by
`generate`); the held-out sequences are those `train --split-by sequence`
holds out with the same fraction and seed. ``--compact`` also scores the
model after a round trip through the zoo's int8 storage, to measure what it
costs.
Prints JSON: accuracy, UAR, per-class recall, confusion matrix.
"""
import argparse
import json

import numpy as np
import torch

from end2you_visual.data import WindowDataset, open_files
from end2you_visual.models import build_model, dequantize_state_dict, quantize_state_dict
from end2you_visual.scoring import score as score_predictions
from end2you_visual.training.split import split_sequences
from end2you_visual.zoo import load_pretrained


def held_out(files, fraction, seed):
    """Validation sequence keys as `train --split-by sequence` computes them."""
    return split_sequences(files, split_by="sequence", fraction=fraction, seed=seed).valid


def held_out_dataset(data, fraction=0.1, seed=0):
    """The held-out windows (one frame each) of the HDF5 files ``data``."""
    files = open_files(data)
    valid = held_out(files, fraction, seed)
    return WindowDataset(files, window=1, sequence_filter=lambda s: (s.path, s.index) in valid)


def predict_classes(model, dataset, batch=256):
    """Class probabilities (``model.activate``) and one-hot labels, (N, C) each."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=0)
    preds, targets = [], []
    with torch.inference_mode():
        for item in loader:
            preds.append(model.activate(model(item["frames"])[:, 0].float()).numpy())
            targets.append(item["labels"][:, 0].numpy())
    return np.concatenate(preds), np.concatenate(targets)


def score(model, dataset):
    pred, target = predict_classes(model.eval(), dataset)
    return score_predictions([pred], [target], "multiclass",
                             names=dataset.label_names).to_dict()


def compact_copy(model):
    """The model as the zoo restores it from int8 storage."""
    copy = build_model(**model.config)
    copy.load_state_dict(dequantize_state_dict(quantize_state_dict(model.state_dict())))
    return copy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--model", required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compact", action="store_true")
    args = parser.parse_args(argv)
    dataset = held_out_dataset(args.data, args.fraction, args.seed)
    model = load_pretrained(args.model)
    report = {"model": args.model, "sequences": len(dataset), "float": score(model, dataset)}
    if args.compact:
        report["compact_int8"] = score(compact_copy(model), dataset)
        report["accuracy_lost_points"] = 100 * (report["float"]["accuracy"]
                                                - report["compact_int8"]["accuracy"])
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
