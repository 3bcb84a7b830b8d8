"""Class probabilities for image files: batched, and an unreadable file is listed, never fatal."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from droptune.console import bar
from droptune.data.domains import IMAGE_EXTENSIONS, list_images
from droptune.data.images import UnreadableImage
from droptune.errors import DroptuneError
from droptune.inference.loading import LoadedModel


def image_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files given, and the images under each folder given, listed as training lists a class folder."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += list_images(item)[0]
        elif item.is_file():
            files.append(item)
        else:
            raise DroptuneError(f"no such image file or folder: {item}")
    if not files:
        raise DroptuneError(f"no image files in {', '.join(map(str, inputs))} (looked for "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _read(path: Path, loaded: LoadedModel) -> torch.Tensor | str:
    try:
        return loaded.read(path)
    except UnreadableImage as error:
        return error.reason


@torch.inference_mode()
def predict(loaded: LoadedModel, images: str | os.PathLike | Sequence[str | os.PathLike], top_k: int = 1,
            batch_size: int = 32, progress: bool | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """One record per readable image ({"file", "classes", "probabilities"}: its top-k), and the unreadable files
    with why. `images`: image files and folders (see `image_files`), or one of them."""
    if not 1 <= top_k <= len(loaded.classes):
        raise DroptuneError(f"top_k must be between 1 and {len(loaded.classes)} (the model's classes), got {top_k}")
    if batch_size < 1:
        raise DroptuneError(f"batch_size must be at least 1, got {batch_size}")
    files = image_files(images)
    device = next(loaded.model.parameters()).device
    records, unreadable = [], []
    for start in bar(progress, iterable=range(0, len(files), batch_size), unit="batch", desc="predicting"):
        batch, paths = [], []
        for path in files[start:start + batch_size]:
            x = _read(path, loaded)
            if isinstance(x, str):
                unreadable.append((path, x))
            else:
                batch.append(x)
                paths.append(path)
        if not batch:
            continue
        probs = loaded.model(torch.stack(batch).to(device)).float().softmax(1).cpu()
        values, indices = probs.topk(top_k, 1)
        for path, p, i in zip(paths, values.tolist(), indices.tolist()):
            records.append({"file": str(path), "classes": [loaded.classes[j] for j in i], "probabilities": p})
    return records, unreadable


def write_predictions(records: list[dict], output: Path) -> None:
    """CSV (file, class_1, probability_1, ...) or JSON Lines, by the output's extension."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".jsonl":
        output.write_text("".join(json.dumps(r) + "\n" for r in records))
        return
    k = len(records[0]["classes"]) if records else 1
    with output.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file"] + [f"{name}_{n}" for n in range(1, k + 1) for name in ("class", "probability")])
        for r in records:
            writer.writerow([r["file"]] + [v for pair in zip(r["classes"], r["probabilities"]) for v in pair])
