"""BundleWriter: the destination holds the old complete bundle or the new one, never a mix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgeport.export import bundle_writer
from edgeport.export.bundle_writer import OWNER_SUFFIX, BundleWriter, recover
from edgeport.runtime.errors import ConfigError, ExportError


def write_bundle(root: Path, tag: str) -> None:
    (root / "manifest.json").write_text(json.dumps({"tag": tag}))
    (root / "reference").mkdir(exist_ok=True)
    (root / "reference" / "logits.npy").write_bytes(tag.encode() * 100)


def tag_of(dest: Path) -> str:
    return json.loads((dest / "manifest.json").read_text())["tag"]


def siblings(dest: Path) -> list[str]:
    """What an export left beside its bundle, but the lock file that serialises exports."""
    lock = f".{dest.name}.lock"
    return sorted(p.name for p in dest.parent.iterdir() if p.name not in (dest.name, lock))


def test_new_bundle_appears_only_on_commit(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "bundle"
    with BundleWriter(dest) as writer:
        write_bundle(writer.root, "new")
        assert writer.root.parent == dest.parent  # same filesystem: rename is atomic
        assert not dest.exists()
        writer.commit()
    assert tag_of(dest) == "new"
    assert siblings(dest) == []
    mask = os.umask(0)
    os.umask(mask)
    assert (dest / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert dest.stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_existing_bundle_is_replaced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    write_bundle(dest, "old")
    (dest / "model.int8.onnx").write_bytes(b"only in the old bundle")
    if not exchange:  # the portable path taken where renameat2 is missing
        monkeypatch.setattr(bundle_writer, "_exchange", lambda a, b: False)
    with BundleWriter(dest) as writer:
        write_bundle(writer.root, "new")
        writer.commit()
    assert tag_of(dest) == "new"
    assert not (dest / "model.int8.onnx").exists()  # no mix of old and new files
    assert siblings(dest) == []


def test_failure_before_commit_keeps_the_old_bundle(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    write_bundle(dest, "old")
    with pytest.raises(RuntimeError, match="gate failed"), BundleWriter(dest) as writer:
        write_bundle(writer.root, "new")
        raise RuntimeError("gate failed")
    assert tag_of(dest) == "old"
    assert siblings(dest) == []


def test_commit_needs_a_manifest(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "b") as writer, pytest.raises(ExportError, match="no manifest"):
        writer.commit()
    assert not (tmp_path / "b").exists()


def test_refuses_to_replace_what_is_not_a_bundle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match=r"non-empty directory without manifest\.json"):
        BundleWriter(home).__enter__()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is a file"):
        BundleWriter(tmp_path / "file").__enter__()
    assert (home / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    with BundleWriter(empty) as writer:  # an empty directory is fine
        write_bundle(writer.root, "new")
        writer.commit()
    assert tag_of(empty) == "new"


def test_recover_restores_a_bundle_left_aside(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    aside = tmp_path / ".bundle.old-1234abcd"
    aside.mkdir()
    write_bundle(aside, "old")  # killed between "rename old aside" and "rename new in"
    recover(dest)
    assert tag_of(dest) == "old"
    assert siblings(dest) == []


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_staging_of_dead_exports_is_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import socket

    dest = tmp_path / "bundle"
    dead = tmp_path / ".bundle.partial-dead"
    live = tmp_path / ".bundle.partial-live"
    for staging, pid in ((dead, _dead_pid()), (live, os.getpid())):
        staging.mkdir()
        (staging / "model.fp32.onnx").write_bytes(b"half")
        staging.with_name(staging.name + OWNER_SUFFIX).write_text(f"{socket.gethostname()} {pid}")
    recover(dest)
    assert not dead.exists() and not dead.with_name(dead.name + OWNER_SUFFIX).exists()
    assert live.exists()


SLOW_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from edgeport.export.bundle_writer import BundleWriter
    with BundleWriter(sys.argv[1]) as writer:
        (writer.root / "manifest.json").write_text(json.dumps({"tag": "new"}))
        (writer.root / "ready").write_text("")
        time.sleep(60)
        writer.commit()
    """
)


def test_sigkill_while_staging_leaves_the_old_bundle(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    write_bundle(dest, "old")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(dest)])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".bundle.partial-*/ready")):
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert tag_of(dest) == "old"
    assert any(p.name.startswith(".bundle.partial-") for p in tmp_path.iterdir())
    with BundleWriter(dest) as writer:  # the next export cleans up after the killed one
        write_bundle(writer.root, "next")
        writer.commit()
    assert tag_of(dest) == "next"
    assert siblings(dest) == []


def test_out_under_a_file_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "some_file.png").write_text("x")
    with pytest.raises(ConfigError, match=r"some_file\.png is a file, not a directory"):
        BundleWriter(tmp_path / "some_file.png" / "sub").__enter__()


COMMIT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from edgeport.export.bundle_writer import BundleWriter
    dest, tag, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))
    with BundleWriter(dest) as writer:
        (writer.root / "manifest.json").write_text(json.dumps({"tag": tag}))
        writer.commit()
    """
)


def test_concurrent_exports_to_one_absent_destination_are_serialised(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    for attempt in range(4):  # without the lock, about 1 in 12 of these raced (ENOTEMPTY)
        start = time.time() + 1.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", COMMIT_SCRIPT, str(dest), f"{attempt}-{i}", str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
        assert [code for code, _ in results] == [0, 0, 0], results
        assert tag_of(dest).startswith(f"{attempt}-")
        assert siblings(dest) == []


def test_a_second_export_fails_clearly_when_the_lock_is_held_too_long(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    with BundleWriter(dest) as first:
        with pytest.raises(ConfigError, match=r"another export is writing .*bundle"):
            BundleWriter(dest, lock_timeout_s=0.3).__enter__()
        write_bundle(first.root, "first")
        first.commit()
    assert tag_of(dest) == "first"
