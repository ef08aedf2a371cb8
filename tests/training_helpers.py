"""What the tests of the parallel trainers share (test_pipeline, test_unit_split, test_batch_split):
random batches, the sequential run they are compared with, and the parameters of two networks
side by side."""
import numpy as np
import pytest

from minimf.nn.schedules import Listed


def make_batches(example_shape, n, size, seed=0, classes=5):
    """n host batches of ``size`` examples: float32 x (size, *example_shape), labels in [0, classes)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, *example_shape)).astype(np.float32), rng.integers(0, classes, size))
            for _ in range(n)]


def use_rates(net, rates):
    """Every optimiser of ``net`` takes step t at rate ``rates[t]`` (a ``Listed`` schedule); returns net."""
    if rates is not None:
        for optimizer in net.optimizers:
            optimizer.schedule = Listed(rates)
    return net


def sequential_run(net, batches, rates=None):
    """``net.train_step`` on every batch in turn (with learning rate ``rates[t]`` for batch t);
    returns what each step returned."""
    use_rates(net, rates)
    return [net.train_step(x, y) for x, y in batches]


def parameter_pairs(net_a, net_b):
    """(label, array of net_a, array of net_b) for every parameter that is not None."""
    for i, (a, b) in enumerate(zip(net_a.layers, net_b.layers)):
        for name, value in a.params.items():
            if value is not None:
                yield f"layer {i + 1} {name}", value, b.params[name]


def assert_usage_error(main, args, message, capsys):
    """``main(args)`` stops as argparse does for a usage error (exit 2) with ``message`` on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
