"""Mono-Forward's layers as Ray actors: one process per layer, on one machine or on a cluster.

The threaded pipeline (minimf/parallel/pipeline.py) runs layer i on batch t while layer i+1 runs on
batch t-1, with threads in one process. Here every layer is a Ray *actor*: a worker process of its
own (with its own CPUs, or a GPU), which holds the layer's W, b, M and its optimiser's state. The
driver (the process running ``python -m minimf.train``) only routes references:

    driver:    xs = ray.put([x_t, ..., x_t+k-1])       # a group of k batches (BATCHES_PER_CALL)
               a1 = layer1.steps(xs, ys)          # an ObjectRef: nothing waits here
               a2 = layer2.steps(a1, ys)          # Ray hands a1 from layer 1's process to layer 2's
               ...

Each actor takes its calls in the order they were sent (one caller, one actor), and inside a call
trains the group's batches one after the other, so layer i trains on the batches in order, on the
a_{i-1} that layer i-1 computed before its own update of that batch, exactly as in ``train_step``:
the same operations on the same numbers, so on NumPy with the same BLAS threads the parameters are
bit for bit those of the sequential run (tests/test_ray_pipeline.py). At most ``in_flight`` groups
are under way at once, so memory stays flat. The losses stay in the actors (on the GPU where there
is one) until the end of a chunk of steps.

Why groups: every call costs the driver a submission and the object store a few bookkeeping
messages, whatever its size; with k batches per call the driver and Ray's raylet pay that cost once
per k batches, CPU time the layers can use where the cores are few (benchmarks/ray_depth.py models
the epoch). The price: the pipeline fills and drains in groups, k (L - 1) batches per chunk instead
of L - 1.

Why not Ray's compiled graphs (``ray.dag``, ``experimental_compile``: shared-memory channels in
place of per-call tasks and the object store): they give the same numbers bit for bit, but a
channel's reader waits by polling. The driver, waiting for a group's result, and every actor waiting
for input use CPU time while they wait, so where the processes share few cores the waiting takes
the cores the layers need. Also, each compile starts a proxy actor (a process), and arrays read
from a channel are views of its buffer that block the channel while they live. They suit machines where every
process has a core to spare, or moving CuPy arrays between GPUs.

After every chunk (an epoch, or ``--checkpoint-every`` steps) the layers' states come back to the
driver's network, so that evaluation, ``model.npz`` and checkpoints (minimf/checkpoint.py) work as
for every other run, and ``--resume`` continues a Ray run.

Which rules: Mono-Forward's dense layers, conv blocks (either read-out) and Mixer blocks, as in the
threaded pipeline. Forward-Forward's layers are local too, but its read-out takes every layer's
activities at once (a fan-in from all layers, not a chain) and its negative labels are drawn per
step by the network's own generator, which would have to live in the first actor; Scalable FF's
blocks are a chain and could join. Neither is wired up yet: their classes say ``PIPELINE = False``.

Faults: a worker that dies (its process killed, its machine lost) raises ``WorkerDied``;
``python -m minimf.train`` then continues from the last checkpoint (minimf/train.py), so the run ends
as if nothing had happened. Ray is an optional dependency (``pip install -e ".[ray]"``): this module
imports it only when a pipeline starts.
"""
import os
import pickle
import socket
import subprocess
import sys
import threading
import time

from minimf.backend import backend_name
from minimf.parallel.threads import check_supports
from minimf.rules.mono_forward import train_layer

BATCHES_PER_CALL = 4   # batches a layer trains in one call
IN_FLIGHT = 3          # groups of batches under way at once
READY_TIMEOUT = 60     # seconds for the actors to start (a cluster without room for them: a clear error)
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


class RayPipelineError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or it has no room for the layers."""


class WorkerDied(RuntimeError):
    """A layer's worker process died; the run can continue from its last checkpoint."""


def import_ray():
    """The ray module, or RayPipelineError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayPipelineError('the ray pipeline needs Ray, which is not installed: pip install -e ".[ray]" '
                               '(or pip install "ray>=2.9")') from None
    return ray


class LayerWorker:
    """One layer and its optimiser, in a worker process of its own (made a Ray actor by ``RayPipeline``).

    The layer arrives pickled from the driver (CuPy arrays pickle through the host and come back on
    this worker's GPU). ``step`` is ``train_step``'s work for this layer alone."""

    def __init__(self, backend, layer_bytes, blas_threads):
        os.environ.update({var: str(blas_threads) for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "OMP_NUM_THREADS")})
        _limit_blas_threads(blas_threads)
        from minimf.backend import get_backend
        self.xp = get_backend(backend)
        self.layer, self.optimizer = pickle.loads(layer_bytes)
        self.losses, self.spans = [], []

    def steps(self, xs, ys, hand_on=True):
        """Forward, local loss, gradients and update of this layer on a group of batches, in order;
        returns their a_i for the next layer (None for the last) and keeps the losses (0-d arrays)
        until ``take_losses``. xs: k inputs (N, ...), ys: k label arrays (N,); each step at the
        rate of the optimiser's own schedule."""
        outputs = []
        for x, y in zip(xs, ys):
            start = time.time()
            a, loss, _ = train_layer(self.layer, self.optimizer, self.xp.asarray(x), self.xp.asarray(y))  # (5)-(8)
            self.losses.append(loss)
            self.spans.append((start, time.time()))            # for --timeline
            outputs.append(a)
        return outputs if hand_on else None

    def take_losses(self):
        """This layer's losses since the last call, as host floats (one transfer for all), and when
        each of those steps ran: (losses, [(start, end), ...])."""
        from minimf.backend import to_numpy
        losses, spans, self.losses, self.spans = self.losses, self.spans, [], []
        return (to_numpy(self.xp.stack(losses)).tolist() if losses else []), spans

    def state(self):
        """({name: host array} of the layer's parameters, the optimiser's ``state_dict()``): what
        the driver copies into its network."""
        from minimf.backend import to_numpy
        params = {name: to_numpy(p) for name, p in self.layer.params.items() if p is not None}
        return params, self.optimizer.state_dict()

    def pid(self):
        return os.getpid()


def _limit_blas_threads(threads):
    """The BLAS threads of this process (threadpoolctl where installed; else the variables above,
    which a BLAS that has not started yet reads)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)


class RayPipeline:
    """The layers of ``model`` as Ray actors for the length of a ``with`` block.

    ``address``: None starts a local Ray instance (stopped again at the end; an instance already
    running in this process is used as it is), "auto" or "HOST:PORT" joins a cluster.
    ``cpus_per_layer``: each actor's CPUs, also its BLAS threads; ``gpus_per_layer``: each actor's
    share of a GPU (CuPy there; 0.5 puts two layers on one device).
    """

    def __init__(self, model, address=None, cpus_per_layer=1, gpus_per_layer=0, in_flight=IN_FLIGHT,
                 timeline=None, batches_per_call=BATCHES_PER_CALL):
        check_supports(model, "PIPELINE", "Ray pipeline")
        self.model, self.address, self.timeline = model, address, timeline
        self.cpus, self.gpus, self.in_flight = cpus_per_layer, gpus_per_layer, in_flight
        self.batches_per_call = batches_per_call
        self.ray, self.workers, self.started_ray = None, [], False

    def __enter__(self):
        self.ray = import_ray()
        self._connect()
        self._check_room()
        self._start_workers()
        return self

    def __exit__(self, *exc):
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []
        if self.started_ray:
            self.ray.shutdown()
        return False

    def _connect(self):
        ray = self.ray
        if ray.is_initialized():
            return
        os.environ.update({k: v for k, v in QUIET_RAY.items() if k not in os.environ})
        if self.address not in (None, "auto"):
            check_reachable(self.address)
            check_token(self.address)
        tries = 2 if self.address is None else 1   # a local start can time out on a loaded machine: once more
        for attempt in range(1, tries + 1):
            try:
                if self.address is None:     # a new instance ("local": never one `ray start` left running),
                    ray.init(address="local", include_dashboard=False, log_to_driver=False,   # on this machine's
                             configure_logging=False, _node_ip_address="127.0.0.1")           # loopback address
                else:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                break
            except Exception as err:  # noqa: BLE001 -- Ray raises ConnectionError, RuntimeError, plain Exception
                ray.shutdown()
                if attempt == tries:
                    where = "a local Ray instance" if self.address is None else f"the Ray cluster at {self.address!r}"
                    raise RayPipelineError(f"cannot start or reach {where}: {type(err).__name__}: {err}") from None
        self.started_ray = True

    def _check_room(self):
        """Refuse at once, rather than wait forever, a request the cluster cannot meet."""
        layers = len(self.model.layers)
        have = self.ray.cluster_resources()
        for kind, each in (("CPU", self.cpus), ("GPU", self.gpus)):
            if each and have.get(kind, 0) < layers * each:
                raise RayPipelineError(f"{layers} layers x {each} {kind} each need {layers * each:g} {kind}s; "
                                       f"the Ray cluster has {have.get(kind, 0):g}")

    def _start_workers(self):
        backend = backend_name(self.model.xp)
        actor = self.ray.remote(LayerWorker)
        env = {k: os.environ[k] for k in ("MINIMF_STRICT_CUPY", "MINIMF_STRICT_CUPY_DEVICES") if k in os.environ}
        threads = max(1, int(self.cpus))
        self.workers = [actor.options(num_cpus=self.cpus, num_gpus=self.gpus, max_concurrency=1,
                                      runtime_env={"env_vars": {**env, "OPENBLAS_NUM_THREADS": str(threads)}})
                        .remote(backend, pickle.dumps((layer, optimizer)), threads)
                        for layer, optimizer in zip(self.model.layers, self.model.optimizers)]
        ready, _ = self.ray.wait([w.pid.remote() for w in self.workers], num_returns=len(self.workers),
                                 timeout=READY_TIMEOUT)
        if len(ready) < len(self.workers):
            raise RayPipelineError(f"only {len(ready)} of {len(self.workers)} layer workers started within "
                                   f"{READY_TIMEOUT} s; the cluster may be busy or short of the requested resources")
        self.pids = self._get([w.pid.remote() for w in self.workers])

    def train(self, batches, validate=True):
        """Train on ``batches`` (as ``train_pipelined``): the losses, one list per batch with one
        float per layer. Afterwards the driver's network holds the layers' new state.

        The batches travel in groups of ``batches_per_call``: one call per layer per group, so
        that Ray's cost per call (the driver's submission, the object store's bookkeeping) is
        paid once for k batches; inside a group each layer still trains batch after batch."""
        pending, last = [], len(self.workers) - 1
        for group in _groups(batches, self.batches_per_call):
            checked = [self.model.check_batch(x, y, values=validate) for x, y in group]
            a = self.ray.put([_host(x) for x, _ in checked])    # the group's inputs, once
            ys = [_host(y) for _, y in checked]                 # small: sent with every call
            for i, worker in enumerate(self.workers):
                a = worker.steps.remote(a, ys, i < last)   # a_i goes straight to layer i+1
            pending.append(a)
            if len(pending) >= self.in_flight:
                self._get(pending.pop(0))                       # bound the groups under way
        self._get(pending)
        per_layer = self._get([w.take_losses.remote() for w in self.workers])
        self._copy_state_back()
        if self.timeline is not None:
            for i, (_, spans) in enumerate(per_layer):
                self.timeline.add_all(i, spans)
        return [list(step) for step in zip(*(losses for losses, _ in per_layer))]

    def _copy_state_back(self):
        """The actors' parameters and optimiser states, copied into the driver's network."""
        xp = self.model.xp
        states = self._get([w.state.remote() for w in self.workers])
        for layer, optimizer, (params, (scalars, arrays)) in zip(self.model.layers, self.model.optimizers, states):
            for name, array in params.items():
                layer.params[name][...] = xp.asarray(array)
            optimizer.load_state_dict(scalars, arrays, xp)

    def kill_worker(self, i):
        """Kill layer i's worker process (for tests of what a fault does)."""
        os.kill(self.pids[i], 9)

    def _get(self, refs):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as err:
            raise WorkerDied(f"a layer's Ray worker died ({type(err).__name__}); the run can continue from "
                             "its last checkpoint") from None
        except self.ray.exceptions.RayTaskError as err:
            raise err.as_instanceof_cause() from None


def check_reachable(address, timeout=3.0):
    """Refuse within seconds a HOST:PORT that accepts no connection (``ray.init`` would wait for
    minutes): the head node of ``ray start --head`` listens there."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayPipelineError(f"--ray-address {address!r}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise RayPipelineError(f"cannot start or reach the Ray cluster at {address!r}: nothing answers there "
                               f"({err.strerror or err}); is `ray start --head` running?") from None


TOKEN_HELP = ("set RAY_AUTH_MODE=token and give this machine the head's token (the file ~/.ray/auth_token, "
              "or RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN); see docs/cluster.md")


def check_token(address, timeout=30.0):
    """Join only a cluster that asks for Ray's token, with a token this machine has, and refuse
    within seconds, in one line, a token the cluster refuses (``ray.init`` would retry for a minute
    and print a warning every second). RAY_AUTH_MODE=disabled opts out, knowingly."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode == "disabled":
        print(f"warning: RAY_AUTH_MODE=disabled: anybody who can reach {address} can run code on the cluster",
              file=sys.stderr)
        return
    if mode != "token":
        raise RayPipelineError(f"--ray-address {address}: minimf joins only clusters with token authentication: "
                               f"{TOKEN_HELP} (RAY_AUTH_MODE=disabled to join one without, if you must)")
    if not token_available():
        raise RayPipelineError(f"--ray-address {address}: RAY_AUTH_MODE=token, but this machine has no token: "
                               f"{TOKEN_HELP}")
    if probe_refuses_token(address, timeout):
        raise RayPipelineError(f"the Ray cluster at {address} refused this machine's token (missing or incorrect): "
                               f"{TOKEN_HELP}")


def token_available():
    """Whether Ray would find a token: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        with open(path) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def probe_refuses_token(address, timeout):
    """Connect a throw-away process to ``address`` and watch its messages: True as soon as the cluster
    answers "Unauthenticated"; False once it connects (or says nothing of the kind within ``timeout``)."""
    code = ("import ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); ray.shutdown()"
            % address)
    probe = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    watchdog = threading.Timer(timeout, probe.kill)      # a probe that hangs silently ends here
    watchdog.start()
    try:
        return any("Unauthenticated" in line or "InvalidAuthToken" in line for line in probe.stderr)
    finally:
        watchdog.cancel()
        probe.kill()
        probe.wait()


def _groups(batches, k):
    """The batches in lists of k (the last may be shorter)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


def _host(array):
    """A host copy for the object store (the workers move it to their own device)."""
    from minimf.backend import to_numpy
    return to_numpy(array)
