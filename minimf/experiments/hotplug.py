"""Hot-plugging layers (MF v1, arXiv 2501.09238v1, section 3.3): because no error crosses layers in
Mono-Forward, a layer can be added, or damaged and retrained, without touching the others.

    1. train an MF MLP with 2 hidden layers (common.train_rule, as every experiment)
    2. plug in a third layer and train it alone: layers 1 and 2 are never stepped, and their outputs
       on the test set stay bit-for-bit identical (checked; an AssertionError otherwise)
    3. damage layer 2: add Gaussian noise of DAMAGE_SCALE times the standard deviation of its weights
    4. retrain layer 2 alone: layer 1's outputs stay identical (checked); layer 3 is left as it is

Accuracy of every layer and of both prediction modes after each stage. Zeroed weights are not used as
the damage: with W = 0 and b = 0 every ReLU input is 0, its gradient mask 1[z > 0] is 0 everywhere, and
the layer cannot learn again (a dead layer, not a damaged one).
"""
import numpy as np

from minimf.backend import make_rng, to_numpy
from minimf.experiments.common import NOT_CHECKED, Report, markdown_table, pm, prepared_data, train_rule
from minimf.rules.mono_forward import MonoForwardLayer
from minimf.nn.optim import make_optimizer

DAMAGE_SCALE = 2.0      # noise std / weight std of the damaged layer
DAMAGED = 1             # index of the damaged layer (layer 2)
BATCH = 256
LR = 1e-3


def layer_outputs(net, x):
    """[a_1, ..., a_L] on the host for inputs x: (N, D), each (N, H_i)."""
    outputs = []
    for layer in net.layers:
        x = layer.forward(x)
        outputs.append(to_numpy(x))
    return outputs


def plug_in_layer(net, width, seed):
    """Append a fresh MF layer (width -> width) with its own projection, loss and Adam optimiser."""
    previous = net.layers[-1].W.shape[1]
    layer = MonoForwardLayer(previous, width, net.num_classes, make_rng([seed, len(net.layers)]), net.xp,
                             net.dtype, bias=net.layers[-1].b is not None)
    net.layers.append(layer)
    net.optimizers.append(make_optimizer("adam", LR))


def train_layer_alone(net, index, x, y, epochs, seed):
    """Train only ``net.layers[index]`` on its local loss (6)-(8) for ``epochs`` shuffled passes; the
    layers below only run forward, the layers above do not run."""
    layer, optimizer = net.layers[index], net.optimizers[index]
    rng = make_rng([seed, 100 + index])
    for _ in range(epochs):
        order = net.xp.asarray(rng.permutation(x.shape[0]))
        for start in range(0, x.shape[0], BATCH):
            idx = order[start:start + BATCH]
            h = x[idx]
            for below in net.layers[:index]:
                h = below.forward(h)
            _, _, grads = layer.local_gradients(h, y[idx])
            optimizer.step(layer.params, grads)


def damage_layer(net, index, seed):
    """W_i += noise, noise ~ N(0, (DAMAGE_SCALE * std(W_i))^2), drawn on the host."""
    layer = net.layers[index]
    W = to_numpy(layer.W)
    noise = make_rng([seed, 200 + index]).normal(0.0, DAMAGE_SCALE * float(W.std()), size=W.shape)
    layer.W[...] = net.xp.asarray(W + noise, dtype=net.dtype)   # in place: W is a view of the layer's flat array


def assert_unchanged(before, after, layers, stage):
    """Raise AssertionError unless the outputs of ``layers`` (0-based) are bit-for-bit identical."""
    for i in layers:
        if not np.array_equal(before[i], after[i]):
            diff = float(np.abs(before[i] - after[i]).max())
            raise AssertionError(f"{stage}: layer {i + 1}'s outputs changed (max |diff| {diff:g})")


def one_seed(ctx, seed, epochs, width):
    """The four stages for one seed: {stage: net.evaluate(...) on the test set}."""
    net, _ = train_rule(ctx, "mf", hidden=[width, width], epochs=epochs, seed=seed)
    data = prepared_data(ctx, "mnist", "mlp")
    (x, y), (x_test, y_test) = data["train"], data["test"]
    stages = {"2 layers trained": net.evaluate(x_test, y_test)}
    before = layer_outputs(net, x_test)
    plug_in_layer(net, width, seed)
    train_layer_alone(net, 2, x, y, epochs, seed)
    assert_unchanged(before, layer_outputs(net, x_test), [0, 1], "plugging in layer 3")
    stages["layer 3 plugged in and trained alone"] = net.evaluate(x_test, y_test)
    before = layer_outputs(net, x_test)
    damage_layer(net, DAMAGED, seed)
    stages[f"layer {DAMAGED + 1} damaged"] = net.evaluate(x_test, y_test)
    train_layer_alone(net, DAMAGED, x, y, epochs, seed)
    assert_unchanged(before, layer_outputs(net, x_test), [0], f"retraining layer {DAMAGED + 1}")
    stages[f"layer {DAMAGED + 1} retrained alone"] = net.evaluate(x_test, y_test)
    return stages


def hotplug_layers(ctx):
    s, epochs = ctx.scale, ctx.epochs_or(ctx.scale.epochs)
    report = Report("Section 3.3: hot-plugging a layer, damaging one and retraining it alone (MNIST)")
    report.settings = {"MLP width": s.width, "epochs per training": epochs, "damage": f"W_2 += N(0, ({DAMAGE_SCALE} "
                       f"std(W_2))^2)", "train/test examples": f"{s.train_subset or 60000}/{s.test_subset or 10000}"}
    results = []
    with ctx.bar(len(ctx.seeds), "hotplug") as bar:
        for seed in ctx.seeds:
            results.append(one_seed(ctx, seed, epochs, s.width))
            bar.update(1)
    rows = []
    for stage in results[0]:
        runs = [r[stage] for r in results]
        layers = [pm([r["layers"][i] for r in runs]) if i < len(runs[0]["layers"]) else "–" for i in range(3)]
        rows.append([stage, *layers, pm([r["bp"] for r in runs]), pm([r["ff"] for r in runs])])
    report.tables.append(("Test accuracy (%), mean ± std over seeds",
                          markdown_table(["stage", "layer 1", "layer 2", "layer 3", "bp mode", "ff mode"], rows)))
    report.notes.append("Checked in every seed: after layer 3 was plugged in and trained, the outputs of layers 1 "
                        "and 2 on the test set are bit-for-bit identical to before; after layer 2 was retrained, "
                        "layer 1's are. Layer 3 is not retrained after layer 2 changes under it.")
    report.notes.append(f"Paper (section 3.3): {NOT_CHECKED}.")
    report.raw = results
    return report
