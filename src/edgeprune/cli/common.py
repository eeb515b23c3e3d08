"""Helpers the commands share: logging to stderr, the data options every data-reading command
takes (declared once, parsed into one object), and loading data with its notes shown."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable

import typer

from edgeprune.cli.app import console_err


def log(message: str) -> None:
    console_err.print(message, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    console_err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def warn_if_chance(accuracy: float | None, num_classes: int, what: str = "test") -> str | None:
    """Print (and return) the chance-level warning for an accuracy a command reports."""
    from edgeprune.metrics.chance import chance_level_warning

    message = chance_level_warning(accuracy, num_classes)
    if message:
        warn(f"{what} {message}")
    return message


@dataclass(frozen=True)
class DataRequest:
    """The data options as given on the command line; None = not given (the checkpoint's recorded
    split, or the library default, applies). `options()` turns it into an
    `edgeprune.data.DataOptions`."""

    spec: str | None = None
    image_size: int | None = None
    val_fraction: float | None = None
    seed: int | None = None
    max_per_class: int | None = None
    normalization: str | None = None
    download: bool = False
    skip_bad: bool = False
    allow_other_split: bool = False

    def given(self) -> dict[str, Any]:
        skip = {"spec", "allow_other_split"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        # `is`, not `in (None, False)`: 0 == False, and --seed 0 is a value given
        return {k: v for k, v in values.items() if v is not None and v is not False}

    def options(self, *, recorded_split: dict | None = None, image_size: int | None = None):
        """DataOptions: the library defaults, then a checkpoint's recorded split (seed, fractions,
        subset), then what was given here; a checkpoint's input size wins over --image-size."""
        from edgeprune.data import DataOptions, split_defaults

        values = {**split_defaults(recorded_split), **self.given()}
        if image_size is not None:
            values["image_size"] = image_size
        return DataOptions(spec=self.spec or "digits", **values)


_DATA_PARAMS: dict[str, tuple[Any, Any]] = {
    "data": (str | None, typer.Option(
        "--data", help="`digits` (bundled, offline), a torchvision CIFAR-10 root, an ImageFolder "
        "tree with train/ and test/, or one class-folder tree (split stratified with --seed).")),
    "image_size": (int | None, typer.Option(
        "--image-size", min=8, max=1024, help="Square input size in pixels (default 32; a "
        "checkpoint's own size when one is given).")),
    "val_fraction": (float | None, typer.Option(
        "--val-fraction", help="Fraction of the training data held out (stratified) for decisions "
        "during training and pruning (default 0.1, or the checkpoint's); the test set is only used "
        "for reported figures.")),
    "seed": (int | None, typer.Option(
        "--seed", min=0, help="Seed of the data split (default 0, or the split recorded in the "
        "checkpoint: another split of the same data is refused, see --allow-other-split).")),
    "max_per_class": (int | None, typer.Option(
        "--max-per-class", min=1, help="Use at most the first N images per class of each split "
        "(quick runs).")),
    "normalization": (str | None, typer.Option(
        "--normalization", help="cifar, imagenet or dataset (computed on the training split). "
        "Default: imagenet with --weights imagenet, else cifar.")),
    "download": (bool, typer.Option("--download", help="Allow downloading CIFAR-10 when the root is missing.")),
    "skip_bad": (bool, typer.Option("--skip-bad", help="Log and count unreadable images instead of stopping.")),
    "allow_other_split": (bool, typer.Option(
        "--allow-other-split", help="Accept a split of the checkpoint's training data other than the "
        "recorded one (its test images may have been trained on; every figure is flagged).")),
}
_FIELD_OF = {"data": "spec"}


def data_options(*, default_spec: str | None = "digits", exclude: tuple[str, ...] = ()):
    """Decorator: the command gets the data options above as flags (declared here once, so every
    command spells and explains them alike) and receives them parsed as `request: DataRequest`."""
    names = [n for n in _DATA_PARAMS if n not in exclude]

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "request"]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[_DATA_PARAMS[name][0], _DATA_PARAMS[name][1]],
                default=(default_spec if name == "data" else False if _DATA_PARAMS[name][0] is bool else None),
            )
            for name in names
        ]

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {_FIELD_OF.get(n, n): kwargs.pop(n) for n in names}
            return command(**kwargs, request=DataRequest(**given))

        # typer reads __signature__ (inspect stops unwrapping there) and resolves the command's own
        # string annotations through __wrapped__'s globals.
        wrapper.__signature__ = signature.replace(parameters=own + added)
        wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "request"}
        return wrapper

    return decorate


def load_data_logged(options):
    """load_data(options), then name the source and print its notes (leaks, skipped files)."""
    from edgeprune.data import load_data

    data = load_data(options, log=log)
    log(
        f"data: {data.name} — {len(data.class_names)} classes, train {len(data.train.labels)}, "
        f"val {len(data.val.labels)}, test {len(data.test.labels)}, {data.image_size}x{data.image_size}"
    )
    for note in data.notes:
        warn(note)
    return data


def load_data_for_checkpoint(request: DataRequest, meta, what: str):
    """The data to evaluate or fine-tune a checkpoint on: its recorded split unless told
    otherwise, at its input size, with the same classes; another split of the same data is
    refused (or flagged with --allow-other-split). Returns (data, split warning or None)."""
    from edgeprune.models.checkpoint import check_data_for_model

    # --image-size only where a command offers it (prune: the resolution lever)
    options = request.options(recorded_split=meta.split, image_size=request.image_size or meta.input_size)
    if not meta.split and request.seed is None:  # older checkpoints: the training seed at least
        options = options.replace(seed=int(meta.training.get("seed", 0) or 0))
    data = load_data_logged(options)
    message = check_data_for_model(meta, data, allow_other_split=request.allow_other_split, what=what)
    flagged = message if message and message.startswith("OTHER SPLIT") else None
    if message:
        warn(message)
    return data, flagged
