"""Learning-rate schedules: the rate of step t, as a small object an optimiser owns.

    schedule = Cosine(lr=1.88e-3, total_steps=2350)
    opt = Adam(schedule=schedule)        # opt.step(...) takes step t at rate schedule(t)

A schedule is a function of the step number t = 0, 1, 2, ... (the steps the optimiser has taken
before this one) and nothing else, so an optimiser that counts its steps knows its rate without
anybody setting it: the pipelines, the Ray actors and a resumed run ask the same schedule and get
the same number. Three are here, as PyTorch names them:

    Constant(lr)                         eta_t = lr
    Cosine(lr, T)                        eta_t = lr * (1 + cos(pi * t / T)) / 2      (from lr to 0 over T steps)
    Step(lr, steps_per_epoch, epochs)    eta_t = lr * 0.1^k,  k = the number of ``epochs`` e with
                                         t // steps_per_epoch >= e                   (MultiStepLR, gamma 0.1)
    Listed(rates)                        eta_t = rates[t]                            (any schedule, written out)

With ``epochs=[60]`` the 61st epoch (t // steps_per_epoch = 60, counted from 0) is the first at lr / 10,
as PyTorch's MultiStepLR does when it is stepped once per epoch.

``to_dict`` and ``schedule_from_dict`` write and read a schedule as JSON (run records, checkpoints).
"""
import math
import numbers


class Constant:
    """eta_t = lr for every step."""

    def __init__(self, lr):
        self.lr = check_rate(lr)

    def __call__(self, t):
        return self.lr

    def to_dict(self):
        return {"kind": "constant", "lr": self.lr}


class Cosine:
    """eta_t = lr * (1 + cos(pi * t / T)) / 2: lr at t = 0, lr / 2 half-way, towards 0 at t = T."""

    def __init__(self, lr, total_steps):
        self.lr = check_rate(lr)
        self.total_steps = check_count(total_steps, "total_steps")

    def __call__(self, t):
        return self.lr * (1 + math.cos(math.pi * t / self.total_steps)) / 2

    def to_dict(self):
        return {"kind": "cosine", "lr": self.lr, "total_steps": self.total_steps}


class Step:
    """eta_t = lr / 10^k, k counting the ``epochs`` already finished at step t."""

    def __init__(self, lr, steps_per_epoch, epochs):
        self.lr = check_rate(lr)
        self.steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch")
        self.epochs = [check_count(e, "epochs") for e in epochs]

    def __call__(self, t):
        return self.lr * 0.1 ** sum(t // self.steps_per_epoch >= e for e in self.epochs)

    def to_dict(self):
        return {"kind": "step", "lr": self.lr, "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs}


class Listed:
    """eta_t = rates[t]: any schedule written out step by step (a warm-up, a schedule of a paper)."""

    def __init__(self, rates):
        self.rates = [check_rate(r) for r in rates]

    def __call__(self, t):
        return self.rates[t]

    def to_dict(self):
        return {"kind": "listed", "rates": self.rates}


SCHEDULES = {"constant": Constant, "cosine": Cosine, "step": Step}


def make_schedule(name, lr, steps_per_epoch, epochs, lr_steps=None):
    """The schedule ``name`` ("constant", "cosine" or "step") for a run of ``epochs`` epochs of
    ``steps_per_epoch`` steps; ``lr_steps``: the epochs of a step schedule."""
    if name == "constant":
        return Constant(lr)
    if name == "cosine":
        return Cosine(lr, steps_per_epoch * epochs)
    if name == "step":
        return Step(lr, steps_per_epoch, lr_steps or [])
    raise ValueError(f"unknown schedule {name!r}: choose {', '.join(SCHEDULES)}")


def schedule_from_dict(d):
    """The schedule ``to_dict`` described."""
    kinds = {**SCHEDULES, "listed": Listed}
    kind = dict(d).pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"unknown schedule {kind!r}: choose {', '.join(kinds)}")
    return kinds[kind](**{k: v for k, v in d.items() if k != "kind"})


def check_rate(lr):
    """``lr`` if it is a finite positive number, else a ValueError."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a finite positive number, got {lr!r}")
    return float(lr)


def check_count(n, name):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)
