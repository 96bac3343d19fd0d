"""Serving benchmark: edgeport's one-process server (HTTP and gRPC) and edgeport on Ray Serve
against KServe's Python ``ModelServer`` (HTTP and gRPC) and a minimal aiohttp server (the
Python limit), each started as its own process as a user starts it, on one machine.

Per model (the seed's CNN, 3x32x32, 0.15 ms per call, and resnet18 fp32, 3x224x224), the servers
take turns, in reversed order each round: each is started (the seconds until
``/v2/health/ready`` answers 200 are its ready time), left idle two seconds (the RSS and PSS of
its process tree), measured, and stopped with SIGTERM. Clients: Triton's perf_analyzer (binary
tensors, ``--input-data zero``, batch 1) at concurrency 1, 4 and 16 on each protocol the server
speaks, then ``edgeport loadtest`` in its closed loop at concurrency 16, whose throughput is
held against perf_analyzer's. Every server runs the same fp32 ONNX file with ONNX Runtime and
``--threads`` (2) intra-op threads; client and server share the machine's CPUs. For resnet18 the
bare engine's single-stream limit (1000 / p50 ms of an ``InferenceSession`` at batch 1, timed
with no server running) is the bar.

    python benchmarks/serve_matrix.py             # both models, 2 rounds (about 15 minutes)
    python benchmarks/serve_matrix.py --quick     # one short round into runs/serve-quick/

Needs perf_analyzer (``make perf-analyzer``) and KServe (``make bench-serve`` installs it).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import repo_relative

REPO = Path(__file__).resolve().parents[1]
PERF_ANALYZER = REPO / ".cache" / "perf_analyzer" / "perf_analyzer"
CACHE = REPO / ".cache" / "serve-matrix"
PEERS = Path(__file__).resolve().parent / "serve_peers.py"
log = logging.getLogger("edgeport.benchmarks")

MODELS = {"simple_cnn_bn": "3x32x32", "resnet18": "3x224x224"}
SERVERS = {  # server -> protocols it speaks
    "edgeport": ("http", "grpc"),
    "edgeport-ray": ("http",),
    "kserve": ("http", "grpc"),
    "minimal": ("http",),
}
CONCURRENCY = (1, 4, 16)
BENCH_CONCURRENCY = 16


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round, for validation")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--rounds", type=int, help="turns of every server (2; quick: 1)")
    parser.add_argument("--window-ms", type=int, help="perf_analyzer window (2000; quick: 500)")
    parser.add_argument("--bench-s", type=float, help="edgeport bench seconds (5; quick: 1)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (2)")
    parser.add_argument("--out", type=Path, help="results folder")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.window_ms = args.window_ms or (500 if args.quick else 2000)
    args.bench_s = args.bench_s or (1.0 if args.quick else 5.0)
    if args.out is None:
        quick = REPO / "runs" / "serve-quick" / machine_slug()
        args.out = quick if args.quick else REPO / "benchmarks/results" / machine_slug() / "serve"
    return args


# -- models ---------------------------------------------------------------------------------


def build(name: str) -> Path:
    """The model's fp32 ONNX file, built once into .cache/serve-matrix/."""
    path = CACHE / f"{name}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if name == "simple_cnn_bn":
        from runtime_overhead import build_small_cnn

        build_small_cnn(path)
    else:
        from matrix_lib import resnet18_classifier_onnx

        resnet18_classifier_onnx(path, opt_batch=8, class_names=[str(i) for i in range(10)])
    log.info("built %s in %.1f s", path.name, time.perf_counter() - started)
    return path


def write_configs(name: str, path: Path, folder: Path) -> tuple[Path, Path]:
    """The model's Triton configuration as JSON and as a serialized ``ModelConfigResponse``,
    from edgeport's one function, for the peers that do not answer it themselves."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2, service_pb2

    from edgeport.runtime import load
    from edgeport.runtime.serve.model_config import model_config

    with load(path, threads=1) as model:
        config = model_config(
            name, "onnx", model.inputs, model.outputs, max_batch=model.batch_range.max
        )
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    as_json, as_pb = folder / f"{name}.config.json", folder / f"{name}.config.pb"
    as_json.write_text(json.dumps(config))
    as_pb.write_bytes(service_pb2.ModelConfigResponse(config=message).SerializeToString())
    return as_json, as_pb


def bare_engine_p50_ms(path: Path, threads: int, runs: int = 200) -> float:
    """The median ms of one ``InferenceSession.run`` at batch 1 (no server running)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    feed = {spec.name: np.zeros([1, *spec.shape[1:]], np.float32)}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    server: str
    proc: subprocess.Popen[bytes]
    http: str
    grpc: str | None
    ready_s: float


def _command(
    server: str, model: str, path: Path, configs: tuple[Path, Path], args: Any
) -> tuple[list[str], int, int | None]:
    port, grpc = free_port(), free_port()
    threads = str(args.threads)
    if server.startswith("edgeport"):
        argv = [sys.executable, "-m", "edgeport.runtime.cli", "serve", str(path), "--name", model]
        argv += ["--threads", threads, "--port", str(port)]
        if server == "edgeport-ray":
            return [*argv, "--ray", "--num-cpus", threads, "--no-access-log"], port, None
        return [*argv, "--grpc-port", str(grpc)], port, grpc
    argv = [sys.executable, str(PEERS), server, str(path), "--name", model, "--port", str(port)]
    argv += ["--threads", threads, "--config", str(configs[0]), "--config-pb", str(configs[1])]
    if server == "kserve":
        return [*argv, "--grpc-port", str(grpc)], port, grpc
    return argv, port, None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start(
    server: str, model: str, path: Path, configs: tuple[Path, Path], args: Any, logs: Path
) -> Running:
    argv, port, grpc = _command(server, model, path, configs, args)
    started = time.perf_counter()
    with (logs / f"{server}-{model}.log").open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while not _ready(url):
        if proc.poll() is not None or time.perf_counter() - started > 180:
            raise RuntimeError(f"{server} did not become ready; see {logs}")
        time.sleep(0.02)
    ready_s = time.perf_counter() - started
    grpc_address = None if grpc is None else f"127.0.0.1:{grpc}"
    return Running(server, proc, f"127.0.0.1:{port}", grpc_address, ready_s)


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory(pid: int) -> dict[str, Any]:
    """RSS and PSS (MB) summed over the process tree, and its process count."""
    rss = pss = 0.0
    pids = _tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            continue
    return {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "processes": len(pids)}


def stop(running: Running) -> float:
    """SIGTERM, then the seconds until the process tree is gone (SIGKILL after 30 s)."""
    tree = _tree(running.proc.pid)
    started = time.perf_counter()
    running.proc.send_signal(signal.SIGTERM)
    try:
        running.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        running.proc.wait()
    while any(Path(f"/proc/{p}").exists() and _alive(p) for p in tree):
        if time.perf_counter() - started > 30:
            for p in tree:
                if _alive(p):
                    os.kill(p, signal.SIGKILL)
            break
        time.sleep(0.05)
    return time.perf_counter() - started


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- clients --------------------------------------------------------------------------------


def perf_analyzer(
    address: str, protocol: str, model: str, concurrency: int, args: Any
) -> dict[str, Any]:
    """perf_analyzer at one concurrency: throughput and latency percentiles (ms)."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        argv = [str(PERF_ANALYZER), "-m", model, "-u", address, "-i", protocol]
        argv += ["--input-data", "zero", "--concurrency-range", str(concurrency)]
        argv += ["-p", str(args.window_ms), "--max-trials", "3", "-s", "1000", "-f", report.name]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return {"error": (done.stdout + done.stderr)[-400:]}
        (row,) = list(csv.DictReader(Path(report.name).read_text().splitlines()))
    return {
        "throughput": float(row["Inferences/Second"]),
        **{f"p{q}_ms": float(row[f"p{q} latency"]) / 1000.0 for q in (50, 90, 99)},
    }


def edgeport_bench(address: str, protocol: str, model: str, args: Any) -> dict[str, Any]:
    """``edgeport loadtest`` in its closed loop at :data:`BENCH_CONCURRENCY`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        argv = [sys.executable, "-m", "edgeport.runtime.cli", "loadtest"]
        argv += [f"http://{address}/v2/models/{model}", "--protocol", protocol]
        argv += ["--concurrency", str(BENCH_CONCURRENCY), "--duration-s", str(args.bench_s)]
        done = subprocess.run([*argv, "--json", report.name], capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": done.stderr[-400:]}
        (point,) = json.loads(Path(report.name).read_text())["points"]
    stats = point["latency_ms"] or {}
    return {
        "throughput": point["achieved_qps"],
        "errors": point["errors"],
        **{f"p{q}_ms": stats.get(f"p{q}") for q in (50, 90, 99)},
    }


def measure_server(
    server: str,
    model: str,
    path: Path,
    configs: tuple[Path, Path],
    round_: int,
    args: Any,
    logs: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    running = start(server, model, path, configs, args, logs)
    time.sleep(2.0)
    idle = memory(running.proc.pid)
    log.info("%s %s: ready in %.2f s, idle %s", model, server, running.ready_s, idle)
    rows = []
    try:
        for protocol in SERVERS[server]:
            address = running.grpc if protocol == "grpc" else running.http
            assert address is not None
            for concurrency in CONCURRENCY:
                result = perf_analyzer(address, protocol, model, concurrency, args)
                rows.append({"client": "perf_analyzer", "concurrency": concurrency, **result})
                rows[-1].update(model=model, server=server, protocol=protocol, round=round_)
                log.info("  %s c%d perf_analyzer: %s", protocol, concurrency, result)
            result = edgeport_bench(address, protocol, model, args)
            rows.append({"client": "edgeport bench", "concurrency": BENCH_CONCURRENCY, **result})
            rows[-1].update(model=model, server=server, protocol=protocol, round=round_)
            log.info("  %s c%d edgeport bench: %s", protocol, BENCH_CONCURRENCY, result)
    finally:
        stop_s = stop(running)
    info = {"model": model, "server": server, "round": round_, "ready_s": running.ready_s}
    return {**info, **idle, "stop_s": stop_s}, rows


# -- report ---------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    servers: list[dict[str, Any]], rows: list[dict[str, Any]], bare: dict[str, float]
) -> dict[str, Any]:
    """Medians over rounds per (model, server, protocol), and the goals."""
    table = []
    for model in dict.fromkeys(r["model"] for r in servers):
        for server in dict.fromkeys(r["server"] for r in servers if r["model"] == model):
            mine = [s for s in servers if s["model"] == model and s["server"] == server]
            for protocol in SERVERS[server]:
                cell: dict[str, Any] = {"model": model, "server": server, "protocol": protocol}
                for client, concurrency in [
                    *(("perf_analyzer", c) for c in CONCURRENCY),
                    ("edgeport bench", BENCH_CONCURRENCY),
                ]:
                    picked = [
                        r
                        for r in rows
                        if (r["model"], r["server"], r["protocol"], r["client"], r["concurrency"])
                        == (model, server, protocol, client, concurrency)
                        and "throughput" in r
                    ]
                    key = "bench" if client == "edgeport bench" else f"c{concurrency}"
                    cell[key] = _median([r["throughput"] for r in picked])
                    cell[f"{key}_p99_ms"] = _median([r["p99_ms"] for r in picked])
                cell["ready_s"] = _median([s["ready_s"] for s in mine])
                cell["rss_mb"] = _median([s["rss_mb"] for s in mine])
                cell["pss_mb"] = _median([s["pss_mb"] for s in mine])
                cell["processes"] = max(s["processes"] for s in mine)
                table.append(cell)
    return {"table": table, "goals": goals(table, bare)}


def _cell(table: list[dict[str, Any]], model: str, server: str, protocol: str) -> dict[str, Any]:
    return next(
        (c for c in table if (c["model"], c["server"], c["protocol"]) == (model, server, protocol)),
        {},
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def goals(table: list[dict[str, Any]], bare: dict[str, float]) -> list[dict[str, Any]]:
    """Each goal: what it compares, the value measured, the bar, and whether it is met."""
    cnn, out = "simple_cnn_bn", []
    http, grpc = _cell(table, cnn, "edgeport", "http"), _cell(table, cnn, "edgeport", "grpc")

    def goal(what: str, value: float | None, bar: float, higher: bool = True) -> None:
        met = None if value is None else (value >= bar if higher else value <= bar)
        out.append({"goal": what, "value": value, "bar": bar, "met": met})

    if http:
        minimal = _cell(table, cnn, "minimal", "http").get("c16")
        goal("CNN HTTP c16 / minimal aiohttp", _ratio(http.get("c16"), minimal), 0.8)
        kserve = _cell(table, cnn, "kserve", "http").get("c16")
        goal("CNN HTTP c16 / KServe HTTP", _ratio(http.get("c16"), kserve), 2.0)
        goal("CNN HTTP p99 at c16 (ms)", http.get("c16_p99_ms"), 30.0, higher=False)
        goal("ready (s)", http.get("ready_s"), 2.0, higher=False)
        goal("idle RSS (MB)", http.get("rss_mb"), 200.0, higher=False)
    if grpc:
        kserve = _cell(table, cnn, "kserve", "grpc").get("c16")
        goal("CNN gRPC c16 / KServe gRPC", _ratio(grpc.get("c16"), kserve), 1.0)
        goal("CNN gRPC p99 at c16 (ms)", grpc.get("c16_p99_ms"), 30.0, higher=False)
    resnet = _cell(table, "resnet18", "edgeport", "http")
    if resnet and "resnet18" in bare:
        limit = 1000.0 / bare["resnet18"]
        goal("resnet18 HTTP c16 / bare single-stream limit", _ratio(resnet.get("c16"), limit), 0.9)
    for cell in table:
        if cell["server"] == "edgeport":
            agree = _ratio(cell.get("bench"), cell.get("c16"))
            goal(
                f"{cell['model']} {cell['protocol']}: "
                "edgeport bench / perf_analyzer at c16 (0.9-1.1)",
                agree,
                0.9,
            )
            out[-1]["met"] = None if agree is None else 0.9 <= agree <= 1.1
    return out


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict[str, Any], bare: dict[str, float], args: Any) -> str:
    lines = [
        "# Serving: edgeport against its peers on one machine",
        "",
        f"Each server on its own, started as a process, {args.threads} ONNX Runtime threads, fp32,"
        f" batch 1 per request; medians of {args.rounds} round(s), servers alternated. "
        f"perf_analyzer (binary tensors, {args.window_ms} ms windows) at concurrency 1, 4, 16; "
        f"`edgeport loadtest` closed loop at 16 for {args.bench_s:g} s. Client and server share "
        "the CPUs. Throughput in inferences/s.",
        "",
        "| model | server | protocol | c1 | c4 | c16 | p99 ms at c16 | edgeport bench c16 | "
        "ready s | idle RSS MB (PSS) | processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["table"]:
        lines.append(
            f"| {c['model']} | {c['server']} | {c['protocol']} | {_fmt(c.get('c1'))} | "
            f"{_fmt(c.get('c4'))} | {_fmt(c.get('c16'))} | {_fmt(c.get('c16_p99_ms'), 1)} | "
            f"{_fmt(c.get('bench'))} | {_fmt(c['ready_s'], 2)} | {_fmt(c['rss_mb'])} "
            f"({_fmt(c['pss_mb'])}) | {c['processes']} |"
        )
    if bare:
        lines += [
            "",
            "Bare engine, batch 1, p50: "
            + ", ".join(f"{m} {ms:.2f} ms (limit {1000 / ms:.1f}/s)" for m, ms in bare.items()),
        ]
    lines += ["", "| goal | measured | bar | met |", "|---|---|---|---|"]
    for g in summary["goals"]:
        met = "-" if g["met"] is None else "yes" if g["met"] else "no"
        lines.append(f"| {g['goal']} | {_fmt(g['value'], 2)} | {g['bar']:g} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not PERF_ANALYZER.is_file():
        print("perf_analyzer is missing: run `make perf-analyzer` first", file=sys.stderr)
        return 1
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.io import atomic_write_json, atomic_write_text

    models, servers = args.models.split(","), args.servers.split(",")
    paths = {m: build(m) for m in models}
    server_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    bare: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="serve-matrix-") as tmp:
        logs = Path(tmp)
        for model in models:
            configs = write_configs(model, paths[model], logs)
            bare_runs = [bare_engine_p50_ms(paths[model], args.threads)]
            for round_ in range(args.rounds):
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server in order:
                    info, measured = measure_server(
                        server, model, paths[model], configs, round_, args, logs
                    )
                    server_rows.append(info)
                    rows += measured
                bare_runs.append(bare_engine_p50_ms(paths[model], args.threads))
            bare[model] = statistics.median(bare_runs)
    summary = summarize(server_rows, rows, bare)
    report = {
        "schema": "edgeport.serve_matrix",
        "schema_version": 2,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            k: repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "environment": collect_environment(threads=args.threads),
        "bare_engine_p50_ms": bare,
        "servers": server_rows,
        "rows": rows,
        **summary,
    }
    text = markdown(summary, bare, args)
    atomic_write_json(args.out / "serve_matrix.json", report)
    atomic_write_text(args.out / "serve_matrix.md", text)
    print(text)
    print(f"wrote {args.out}/serve_matrix.json and serve_matrix.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
