"""The cluster recipe of docs/cluster.md against a real ``ray start --head`` on this machine: a head with
token authentication, a run that joins it with the token, and every way of joining without it refused
in one line (issue 25). One head for the module; ``ray stop`` afterwards."""
import os
import secrets
import shutil
import socket
import subprocess
import sys

import pytest

from minimf.train import main

pytest.importorskip("ray")
QUICK = ["--train-subset", "300", "--test-subset", "100", "--hidden", "16", "12", "--batch-size", "50",
         "--epochs", "1", "--no-progress", "--pipeline", "ray"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_file(folder, name):
    path = folder / name
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head started as the recipe starts it (RAY_AUTH_MODE=token, the token in a file);
    yields (address, good token file, folder for more files)."""
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not installed")
    folder = tmp_path_factory.mktemp("cluster")
    good = token_file(folder, "token")
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(good), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "2",
                              "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
                              "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.fail(f"ray start --head failed: {started.stdout[-2000:]}{started.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}", good, folder
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def run(argv, capsys, monkeypatch, **env):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(argv)
    return code, capsys.readouterr().err


def test_a_run_with_the_token_joins_and_trains(head, tmp_path):
    """As the recipe runs it: a new process with the token in its environment (Ray reads the token
    once per process, so this one runs apart from the test's)."""
    address, good, _ = head
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(good), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "minimf.train", *QUICK, "--ray-address", address,
                           "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()


def test_a_wrong_token_is_refused_in_one_line(head, tmp_path, capsys, monkeypatch):
    address, _, folder = head
    bad = token_file(folder, "wrong-token")
    code, err = run(QUICK + ["--ray-address", address], capsys, monkeypatch,
                    RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(bad))
    assert code == 1 and "refused this machine's token" in err and "docs/cluster.md" in err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert "Traceback" not in err and len(errors) == 1 and "gcs_client" not in err, err


def test_joining_without_token_authentication_is_refused(head, capsys, monkeypatch):
    address, _, _ = head
    code, err = run(QUICK + ["--ray-address", address], capsys, monkeypatch)
    assert code == 1 and "joins only clusters with token authentication" in err


def test_token_mode_without_a_token_is_refused(head, tmp_path, capsys, monkeypatch):
    address, _, _ = head
    code, err = run(QUICK + ["--ray-address", address], capsys, monkeypatch, RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(tmp_path / "no-such-file"), HOME=str(tmp_path))
    assert code == 1 and "this machine has no token" in err


def test_a_local_instance_starts_stops_and_trains(tmp_path):
    """Without --ray-address minimf starts a Ray instance of its own for the run (a new process, as
    a user runs it: the tests' shared instance would hide this path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "minimf.train", *QUICK, "--out", str(tmp_path / "local")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unauthenticated" not in done.stderr and (tmp_path / "local" / "metrics.json").exists()
