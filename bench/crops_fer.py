"""Does face framing matter to a FER2013 model? Whole images against detected
box crops and aligned crops, on the validation images its recipe holds out.

For each held-out image (FER2013's 48 x 48 grey faces as packed by
`generate --skip-detection`), three inputs of the model's size:

- ``whole``: the image as the model was trained on it;
- ``box``: MTCNN's face box, cropped with ``--margin`` (default the
  model's framing, 0 for the zoo's FER2013 models) as `generate` does;
- ``aligned``: the five landmarks mapped onto the face template
  (`generate --crop aligned`), with the same margin.

MTCNN does not find faces that fill a 48 px image, so each image is first
enlarged ``--upscale`` times (bilinear) and detected and cropped there.
Images where no face is found are scored on their whole image for ``box``
and ``aligned`` too (the ``found`` share says how many). Prints JSON:
accuracy and UAR of each framing, over all images and over the images where
a face was found.

``python -m bench.crops_fer fer_h5 --model resnet18-small-fer2013-cpu``
"""
import argparse
import json

import numpy as np
import torch
from PIL import Image

from end2you_visual.faces import FacePipeline
from end2you_visual.framing import model_framing
from end2you_visual.models.checkpoint import unwrap_model
from end2you_visual.scoring import score as score_predictions
from end2you_visual.zoo import load_pretrained

from .zoo_accuracy import held_out_dataset, predict_classes


def held_out_images(data, fraction=0.1, seed=0):
    """The held-out images (N, S, S, 3) uint8 and their one-hot labels (N, C)."""
    dataset = held_out_dataset(data, fraction, seed)
    items = [dataset[i] for i in range(len(dataset))]
    frames = np.stack([item["frames"][0].numpy() for item in items])
    labels = np.stack([item["labels"][0].numpy() for item in items])
    return frames, labels, dataset.label_names


def framed(images, size, margin, crop, upscale):
    """Crops of ``images`` as ``generate`` cuts them, after enlarging each
    ``upscale`` times: (N, size, size, 3) and the found mask (N,)."""
    pipeline = FacePipeline(size=size, margin=margin, crop=crop)
    crops, found = [], []
    for image in images:
        big = np.asarray(Image.fromarray(image).resize(
            (image.shape[1] * upscale, image.shape[0] * upscale), Image.BILINEAR))
        faces = pipeline.process_image(big)
        crops.append(faces.crops[0])
        found.append(bool(faces.found[0]))
    return np.stack(crops), np.array(found)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--model", default="resnet18-small-fer2013-cpu")
    parser.add_argument("--margin", type=float, help="default: the model's framing")
    parser.add_argument("--upscale", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_pretrained(args.model).eval()
    size = unwrap_model(model).config["input_size"]
    framing = model_framing(model)
    margin = args.margin if args.margin is not None else (
        framing.margin if framing is not None else 0.2)
    images, labels, names = held_out_images(args.data, args.fraction, args.seed)
    inputs, found = {"whole": images}, {}
    for crop in ("box", "aligned"):
        crops, found[crop] = framed(images, size, margin, crop, args.upscale)
        inputs[crop] = np.where(found[crop][:, None, None, None], crops, images)
    both = found["box"] & found["aligned"]
    report = {"model": args.model, "images": len(images), "margin": margin,
              "upscale": args.upscale, "found": {k: float(v.mean()) for k, v in found.items()},
              "found_both": int(both.sum())}
    for kind, frames in inputs.items():
        windows = [{"frames": torch.from_numpy(f)[None], "labels": torch.from_numpy(y)[None]}
                   for f, y in zip(frames, labels)]
        pred, _ = predict_classes(model, windows)
        every = score_predictions([pred], [labels], "multiclass", names=names).to_dict()
        on_found = score_predictions([pred[both]], [labels[both]], "multiclass",
                                     names=names).to_dict()
        report[kind] = {"accuracy": every["accuracy"], "uar": every["uar"],
                        "accuracy_where_found": on_found["accuracy"],
                        "uar_where_found": on_found["uar"]}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
