"""Load on `sync-sdk serve` over loopback: throughput and latency at 1, 4 and 16 concurrent clients.

    bash scripts/triton_env.sh
    build/serve-venv/bin/python benchmarks/serve_load.py            # synthetic-tiny, 2 workers

Starts the server (a real tritonserver from the nvidia-pytriton wheel) on 127.0.0.1 with free ports
and a media root of synthetic 5.2-s clips; each client thread sends `path` requests one after another
(clips in turn), alternating HTTP and gRPC, until the level has sent its requests (or its time is up).
Every answer is compared with engine.predict on the same file in this process (same class, logits within
1e-4): a mismatch or an error is counted, never hidden. Latency is the client's, request sent to answer
read. Prints a table; writes benchmarks/results/serve_load.json (or --out).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ATOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, model: str, workers: int, log: Path) -> tuple[subprocess.Popen, int, int]:
    http_port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "sync_sdk.cli.main", "serve", "--model", model, "--media-root", str(root),
           "--workers", str(workers), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    import tritonclient.http as http
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"server did not start; its log:\n{log.read_text()[-3000:]}")
        try:
            c = http.InferenceServerClient(f"127.0.0.1:{http_port}")
            if c.is_model_ready("synchformer"):
                c.close()
                return proc, http_port, grpc_port
            c.close()
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)


def client(protocol: str, ports: tuple[int, int]):
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    if protocol == "http":
        return http, http.InferenceServerClient(f"127.0.0.1:{ports[0]}", network_timeout=600)
    return grpc, grpc.InferenceServerClient(f"127.0.0.1:{ports[1]}")


def run_level(n_clients: int, n_requests: int, max_sec: float, names: list[str], reference: dict,
              ports: tuple[int, int]) -> dict:
    """n_clients threads sharing n_requests requests (stopping at max_sec)."""
    lock, counter = threading.Lock(), iter(range(n_requests))
    stop_at = time.monotonic() + max_sec
    records = []  # (protocol, latency_s, ok, matches)

    def worker(k: int) -> None:
        conns = {p: client(p, ports) for p in ("http", "grpc")}
        try:
            turn = k
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                protocol = ("http", "grpc")[turn % 2]
                turn += 1
                mod, c = conns[protocol]
                name = names[i % len(names)]
                item = mod.InferInput("path", [1], "BYTES")
                item.set_data_from_numpy(np.array([name.encode()], dtype=object))
                t = time.perf_counter()
                try:
                    r = c.infer("synchformer", [item])
                    logits, cls = r.as_numpy("logits"), int(r.as_numpy("class_index")[0])
                    ok = True
                except Exception as e:  # counted as an error
                    print(f"error: {str(e)[-300:]}", file=sys.stderr)
                    ok, logits, cls = False, None, None
                latency = time.perf_counter() - t
                ref = reference[name]
                match = ok and cls == ref.class_index and np.allclose(logits, ref.logits, atol=ATOL, rtol=0)
                with lock:
                    records.append((protocol, latency, ok, match))
        finally:
            for _, c in conns.values():
                c.close()

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(worker, range(n_clients)))
    wall = time.perf_counter() - t0
    lat = np.array([r[1] for r in records]) * 1e3
    return {"clients": n_clients, "requests": len(records), "errors": sum(not r[2] for r in records),
            "mismatches": sum(r[2] and not r[3] for r in records),
            "by_protocol": {p: sum(r[0] == p for r in records) for p in ("http", "grpc")},
            "wall_s": round(wall, 3), "throughput_rps": round(len(records) / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="synthetic-tiny")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=3, help="requests per client per level (at least 12)")
    ap.add_argument("--max-seconds", type=float, default=120, help="time limit of one level")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()
    if max(args.clients) > 64:
        sys.exit("at most 64 clients: this is a loopback check, not a stress tool")
    from sync_sdk import SyncEngine
    from sync_sdk.synthetic import generate_clip, write_clip

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "media"
        names = [f"clip{k}.mp4" for k in range(args.clips)]
        for k, name in enumerate(names):
            write_clip(generate_clip(k, offset_sec=0.2 * (k % 5 - 2), duration_sec=5.2), root / name)
        engine = SyncEngine.from_pretrained(args.model)
        t = time.perf_counter()
        reference = {n: engine.predict(str(root / n)) for n in names}
        predict_ms = (time.perf_counter() - t) / len(names) * 1e3
        proc, *ports = start_server(root, args.model, args.workers, Path(tmp) / "server.log")
        try:
            _, c = client("http", ports)
            server = c.get_server_metadata()
            c.close()
            levels = [run_level(n, max(12, args.requests * n), args.max_seconds, names, reference, ports)
                      for n in args.clients]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    out = {
        "benchmark": "serve_load",
        "server": {"triton": f"Triton Inference Server {server['version']}",
                   "pytriton": metadata.version("nvidia-pytriton"), "tritonclient": metadata.version("tritonclient"),
                   "python": platform.python_version(), "workers": args.workers, "exit_code_on_sigterm": code},
        "model": args.model, "backend": engine.backend.name, "shift_views_sec": list(engine.shift_views),
        "source": "path (media root on local disk), 5.2-s synthetic clips",
        "protocols": ["http", "grpc"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "predict_in_process_ms": round(predict_ms, 1),
        "levels": levels,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{out['server']['triton']} (pytriton {out['server']['pytriton']}), {args.model} on {engine.backend.name}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs; engine.predict in this process: {predict_ms:.0f} ms")
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'mismatch':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for r in levels:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['mismatches']:>8} {r['throughput_rps']:>7.2f} "
              f"{r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
