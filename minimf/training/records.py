"""What a run reports after each epoch: accuracy records that ask the network for its modes, and
the one console line made from a record.

    evaluate(net, data, predict="bp")  -> {"test_acc": 0.97, "test_acc_bp": 0.97, "test_acc_ff": 0.975,
                                           "layer_test_acc": [0.96, 0.97], "val_acc": ...}
    format_record(record, epochs)      -> "epoch 2/5  loss 0.2100 0.1200  test bp 97.10%  ff 97.32% ..."
"""
import numpy as np

# How the headline accuracy's mode is worded (the modes are the networks' EVALUATION_MODES)
MODE_NAMES = {"bp": "BP mode", "ff": "FF mode", "all_labels": "all labels", "one_pass": "one pass"}


def headline_mode(net, predict="bp"):
    """The prediction mode of the headline ``test_acc``: ``predict`` where the network has it (MF,
    SFF), else its first (FF: all labels; BP, FA, DFA: its one accuracy)."""
    return predict if predict in net.EVALUATION_MODES else net.EVALUATION_MODES[0]


def evaluate(net, data, predict="bp"):
    """Test (and validation) accuracy: ``test_acc`` in the headline mode and, for networks with
    several modes (``net.EVALUATION_MODES``), ``test_acc_<mode>`` for each, and each layer's
    accuracy where ``net.evaluate`` gives them. ``data``: {"test": (x, y), "validation": (x, y) or
    None}, checked once already (``minimf.training.data``)."""
    record = {}
    for split in ("test", "validation"):
        if data.get(split) is None:
            continue
        result = net.evaluate(*data[split], validate=False)
        prefix = "test" if split == "test" else "val"
        record[f"{prefix}_acc"] = result[headline_mode(net, predict)]
        if len(net.EVALUATION_MODES) > 1:
            record.update({f"{prefix}_acc_{mode}": result[mode] for mode in net.EVALUATION_MODES})
        if "layers" in result:
            record[f"layer_{prefix}_acc"] = result["layers"]
    return record


def format_record(r, epochs):
    """One line per epoch: the training loss(es), the test accuracy in every mode the record holds,
    each layer's, the validation accuracy and the seconds."""
    loss = " ".join(f"{v:.4f}" for v in np.atleast_1d(r["train_loss"]))
    line = f"epoch {r['epoch']}/{epochs}  loss {loss}  "
    modes = [k[len("test_acc_"):] for k in r if k.startswith("test_acc_")]
    if modes:
        line += "test " + "  ".join(f"{m.replace('_', ' ')} {100 * r['test_acc_' + m]:.2f}%"
                                    for m in modes) + "  "
        line += "layers " + " ".join(f"{100 * a:.2f}%" for a in r.get("layer_test_acc", [])) + "  "
    else:
        line += f"test {100 * r['test_acc']:.2f}%  "
    if "val_acc" in r:
        line += f"val {100 * r['val_acc']:.2f}%  "
    return line + f"{r['seconds']:.1f} s"
