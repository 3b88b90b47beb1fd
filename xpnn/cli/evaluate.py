"""``xpnn eval``: a checkpoint's model (rebuilt from its run config or its saved architecture),
checked, evaluated on its dataset's test split, and reported as text or one JSON object."""

import json

from .. import backend
from ..errors import CheckpointError
from ..models import build_model
from .recipes import EVAL_BATCH
from .run_config import check_run_config, load_run_checkpoint, refuse_non_finite, remembered_data_dir
from .text import plural


def eval_command(args):
    from .. import nn
    from ..data import load_dataset
    from ..train import Trainer, confusion_matrix, format_confusion_matrix

    checkpoint = load_run_checkpoint(args.checkpoint, ("dataset",))
    config = checkpoint.config
    xp = backend.resolve(args.device)
    if "model" not in config:  # a model built in Python, rebuilt from its saved architecture
        model = checkpoint.build_model(device=xp)
    else:  # a checkpoint of 'xpnn train' (older ones hold no architecture): the run config names the model
        check_run_config(checkpoint, ("model", "dataset", "image_shape", "num_classes"))
        model = build_model(config["model"], config["image_shape"], config["num_classes"], device=xp)
        checkpoint.restore(model, rng=False)
    refuse_non_finite(checkpoint, model)
    test_set = load_dataset(config["dataset"], train=False, root=args.data_dir or remembered_data_dir(checkpoint))
    x, y = test_set.arrays()
    if "image_shape" in config and tuple(x.shape[1:]) != tuple(config["image_shape"]):
        raise CheckpointError(f"checkpoint {checkpoint.path} expects images of shape {tuple(config['image_shape'])}, the {test_set.name} test split has {tuple(x.shape[1:])}")
    num_classes = config.get("num_classes", len(test_set.classes))

    logits = Trainer(model, None, verbose=False).predict(x, batch_size=EVAL_BATCH, logits=True)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise CheckpointError(f"checkpoint {checkpoint.path}: its model gives outputs of shape {tuple(logits.shape)} on the {test_set.name} test split, expected (N, {num_classes}) class scores")
    loss = float(nn.CrossEntropyLoss()(logits, backend.asarray(y, xp, device=model.device)))
    predicted = backend.to_numpy(xp.argmax(logits, axis=1))
    accuracy = float((predicted == y).mean())
    cm = confusion_matrix(y, predicted, num_classes)
    if args.json:
        print(json.dumps({"loss": loss, "accuracy": accuracy, "confusion_matrix": cm.tolist(), "dataset": test_set.name, "samples": len(y), "epoch": checkpoint.epoch}))
        return 0
    print(f"checkpoint {checkpoint.path}: {config.get('model', checkpoint.model_class)} trained {plural(checkpoint.epoch, 'epoch')} on {test_set.name}")
    print(f"test split: {len(y)} images; loss {loss:.4f}  accuracy {accuracy:.2%}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(format_confusion_matrix(cm, config.get("classes")))
    return 0
