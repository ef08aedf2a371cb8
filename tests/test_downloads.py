"""Downloads against a local HTTP server on 127.0.0.1 (see local_server.py): no network needed.

Each test publishes a generated file and checks what ``download.fetch`` leaves on disk: the verified
file under its name, or nothing under that name. Retries do not wait (RETRY_WAIT = 0).
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minimf
from fake_data import remote
from local_server import LocalServer
from minimf.datasets import download
from minimf.datasets.download import DownloadError, fetch

NAME = "archive.tar.gz"
BODY = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()  # ~5 reads of 64 KiB
HALF = len(BODY) // 2


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    monkeypatch.setattr(download, "TIMEOUT", 10.0)  # a hang fails the test instead of blocking it
    monkeypatch.setattr(download, "LOCK_POLL", 0.05)


def files_in(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


def get(server, tmp_path, *urls, **kwargs):
    """fetch() the file whose true content is BODY from ``urls`` into tmp_path/cache."""
    return fetch(remote(NAME, BODY, urls), tmp_path / "cache", label="test", progress=False, **kwargs)


def test_good_download(server, tmp_path, capsys):
    path = get(server, tmp_path, server.serve(NAME, BODY))
    assert path == tmp_path / "cache" / NAME and path.read_bytes() == BODY
    assert files_in(path.parent) == [NAME, NAME + ".lock"]           # no .part, no temporary file left
    assert server.requests == [(NAME, None)]
    assert "downloading archive.tar.gz" in capsys.readouterr().err
    get(server, tmp_path, server.url(NAME))                            # verified copy: no second request
    assert len(server.requests) == 1


def test_checksum_mismatch_deletes_the_file_and_says_so(server, tmp_path, capsys):
    bad = BODY[:1000] + bytes([BODY[1000] ^ 1]) + BODY[1001:]          # right size, one bit changed
    with pytest.raises(DownloadError) as info:
        get(server, tmp_path, server.serve(NAME, bad))
    message = str(info.value)
    assert "checksum mismatch" in message and "(deleted)" in message and remote(NAME, BODY).sha256 in message
    assert "deleted the bad file" in capsys.readouterr().err
    assert files_in(tmp_path / "cache") == [NAME + ".lock"]            # neither the file nor a .part


def test_checksum_mismatch_on_one_mirror_falls_over_to_the_next(server, tmp_path):
    bad = bytes(len(BODY))
    path = get(server, tmp_path, server.serve("bad/" + NAME, bad), server.serve(NAME, BODY))
    assert path.read_bytes() == BODY


def test_truncated_transfer_is_retried_then_reported(server, tmp_path):
    """The address serves a file cut short (its own Content-Length is consistent): every try ends early."""
    with pytest.raises(DownloadError) as info:
        get(server, tmp_path, server.serve(NAME, BODY[:HALF]))
    message = str(info.value)
    assert f"ended early, at {HALF:,} of {len(BODY):,} bytes" in message
    assert f"It must be {len(BODY):,} bytes" in message and str(tmp_path / "cache" / NAME) in message
    assert not (tmp_path / "cache" / NAME).exists()
    # ATTEMPTS tries: the resumed one is refused (416: nothing after byte HALF) and starts over
    assert server.hits(NAME) == [None, f"bytes={HALF}-", None] and download.ATTEMPTS == 3


def test_truncated_mirror_then_the_next_one_resumes(server, tmp_path):
    path = get(server, tmp_path, server.serve("short/" + NAME, BODY[:HALF]), server.serve(NAME, BODY))
    assert path.read_bytes() == BODY
    assert server.hits(NAME) == [f"bytes={HALF}-"]        # the second address sent only the rest


def test_404_falls_over_to_the_second_mirror(server, tmp_path, capsys):
    path = get(server, tmp_path, server.serve("gone/" + NAME, b"", mode="404"), server.serve(NAME, BODY))
    assert path.read_bytes() == BODY
    assert [p for p, _ in server.requests] == ["gone/" + NAME, NAME]
    assert "trying the next address" in capsys.readouterr().err


def test_404_everywhere_is_reported_per_address(server, tmp_path):
    urls = [server.serve("a/" + NAME, b"", mode="404"), server.serve("b/" + NAME, b"", mode="404")]
    with pytest.raises(DownloadError) as info:
        get(server, tmp_path, *urls)
    for url in urls:
        assert f"{url}: HTTP 404" in str(info.value)


def test_server_that_stops_mid_file_is_resumed_with_a_range_request(server, tmp_path, capsys):
    path = get(server, tmp_path, server.serve(NAME, BODY, mode="drop-first"))
    assert path.read_bytes() == BODY
    assert server.hits(NAME) == [None, f"bytes={HALF}-"]
    assert f"resuming archive.tar.gz at byte {HALF:,}" in capsys.readouterr().err


def test_stalled_server_times_out_and_is_resumed(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT", 0.3)
    server.stall = 1.5
    path = get(server, tmp_path, server.serve(NAME, BODY, mode="stall-first"))
    assert path.read_bytes() == BODY
    assert server.hits(NAME) == [None, f"bytes={HALF}-"]


def test_part_file_of_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / (NAME + ".part")).write_bytes(BODY[:100_000])
    path = get(server, tmp_path, server.serve(NAME, BODY))
    assert path.read_bytes() == BODY and server.hits(NAME) == ["bytes=100000-"]


def test_server_that_ignores_ranges_makes_the_download_start_over(server, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / (NAME + ".part")).write_bytes(BODY[:100_000])
    path = get(server, tmp_path, server.serve(NAME, BODY, mode="no-range"))
    assert path.read_bytes() == BODY   # not BODY[:100000] + BODY: the 200 answer replaced the part


def test_a_bad_part_file_fails_the_checksum_and_the_next_run_starts_clean(server, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / (NAME + ".part")).write_bytes(b"\x00" * 100_000)  # not a prefix of BODY
    url = server.serve(NAME, BODY)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        get(server, tmp_path, url)
    assert files_in(tmp_path / "cache") == [NAME + ".lock"]
    assert get(server, tmp_path, url).read_bytes() == BODY


def test_server_sending_too_much_is_a_wrong_file(server, tmp_path):
    with pytest.raises(DownloadError, match="sends more than the expected"):
        get(server, tmp_path, server.serve(NAME, BODY + b"extra"))
    assert files_in(tmp_path / "cache") == [NAME + ".lock"]


def test_bad_cached_file_is_deleted_and_downloaded_again(server, tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / NAME).write_bytes(BODY[:-1] + b"?")
    path = get(server, tmp_path, server.serve(NAME, BODY))
    assert path.read_bytes() == BODY
    assert "checksum mismatch" in capsys.readouterr().err


def closed_port_url():
    """An address on 127.0.0.1 where nothing listens: connecting is refused, as when offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{NAME}"


def test_offline_message_names_the_file_where_to_put_it_and_its_checksum(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as info:
        get(None, tmp_path, url)
    message = str(info.value)
    assert f"could not download {NAME}" in message and f"{url}: cannot connect" in message
    assert f"put it at\n  {tmp_path / 'cache' / NAME}" in message
    assert f"{len(BODY):,} bytes with sha256 {remote(NAME, BODY).sha256}" in message


def test_download_false_reports_the_missing_file_without_any_request(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        get(server, tmp_path, server.url(NAME), download=False)
    assert "missing file" in str(info.value) and remote(NAME, BODY).sha256 in str(info.value)
    assert server.requests == [] and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------------
# Several processes
# ---------------------------------------------------------------------------------------------------

FETCH_SCRIPT = """
import sys
from pathlib import Path
from minimf.datasets.catalog import RemoteFile
from minimf.datasets.download import fetch
name, size, sha, url, folder = sys.argv[1:]
fetch(RemoteFile(name, int(size), sha, (url,)), Path(folder), label="proc", progress=False)
"""


def start_fetch(url, folder, log):
    """A separate Python process that fetches BODY from ``url`` into ``folder``; stderr to ``log``."""
    spec = remote(NAME, BODY)
    env = dict(os.environ, PYTHONPATH=str(Path(minimf.__file__).parent.parent))
    return subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, NAME, str(spec.size), spec.sha256, url,
                             str(folder)], stderr=open(log, "w"), env=env)


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_processes_downloading_one_file_at_once(server, tmp_path):
    """The second process waits on the lock while the first is mid-file, then finds the verified file."""
    url, folder = server.serve(NAME, BODY, mode="hold"), tmp_path / "cache"
    first = start_fetch(url, folder, tmp_path / "first.log")
    wait_for(lambda: len(server.requests) == 1, "the first request")
    second = start_fetch(url, folder, tmp_path / "second.log")
    wait_for(lambda: "waiting for another process" in (tmp_path / "second.log").read_text(), "the second to wait")
    server.release.set()
    assert first.wait(60) == 0 and second.wait(60) == 0, (tmp_path / "first.log").read_text()
    assert (folder / NAME).read_bytes() == BODY
    assert len(server.requests) == 1                                    # one transfer, not two
    assert files_in(folder) == [NAME, NAME + ".lock"]


def test_killed_download_leaves_only_a_part_file_that_the_next_run_resumes(server, tmp_path):
    url, folder = server.serve(NAME, BODY, mode="hold"), tmp_path / "cache"
    proc = start_fetch(url, folder, tmp_path / "killed.log")
    part = folder / (NAME + ".part")
    wait_for(lambda: part.exists() and part.stat().st_size == HALF, "half the file in .part")
    proc.kill()
    proc.wait(30)
    assert files_in(folder) == [NAME + ".lock", NAME + ".part"]         # no file under the real name
    server.release.set()
    path = fetch(remote(NAME, BODY, (url,)), folder, progress=False)   # the OS released the dead lock
    assert path.read_bytes() == BODY
    assert server.hits(NAME) == [None, f"bytes={HALF}-"]
