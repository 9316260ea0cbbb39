"""The example service against the same service written the naive way, over loopback HTTP.

Usage: python benchmarks/service.py [--quick] [--requests N] [--concurrency 64 256]
[--rounds R] [--timeout S]

Trains the default pipeline on the 20 Newsgroups training split, saves it, and starts two
uvicorn servers (one worker each, on 127.0.0.1) that load that file:

- ``asyncclf``: ``examples/fastapi_service.py`` (``ASYNCCLF_MODEL``), whose concurrent
  requests share batches (at most 2 ms of waiting for company);
- ``naive``: :func:`naive_app` below, the same FastAPI service written the usual way:
  each request runs ``predict_proba([text])`` on the same fitted estimator through
  ``starlette.concurrency.run_in_threadpool`` (anyio's default 40-thread limiter, BLAS
  threads not capped) and answers the label and its score.

A hand-written HTTP/1.1 load generator (one keep-alive connection per concurrent
worker, much cheaper per request than an HTTP client library) sends N
``POST /classify`` requests from C concurrent workers, each with a 20 Newsgroups test
text (cycled, pre-encoded as JSON), and times each request from send to body read.
Non-200 answers and exceptions count as errors. The services are measured in turn
(asyncclf, naive, asyncclf, naive, ... over ``--rounds``), each run with a fresh client
whose warm-up opens its connections first, so that the machine's drift hits both alike.
Each round ends with a third run, "no model": the same requests to the naive server's
``POST /noop``, which parses the body and answers without touching a model: the ceiling
that this client, uvicorn and FastAPI leave on this machine. Requests/s is the median
over rounds; the ratio asyncclf/naive is the median of the per-round ratios; latency
percentiles pool every round.

Caveats when reading the figures:

- The client runs on the same machine and takes CPU from the server (an httpx client
  took 2-6 ms of CPU per request here, more than either server, and capped both near
  the no-model ceiling: hence the hand-written one), and its own queueing is part of
  every latency. The table prints the CPU each side spent per request to show the split.
- The batcher statistics per concurrency are differences of the server's cumulative
  counters (``GET /healthz``) across the measured runs; the ones printed at the end are
  the server's own, warm-ups included, percentiles over its last 1,024 requests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from _data import news_split
from anyio.streams.buffered import BufferedByteReceiveStream
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from asyncclf import AsyncClassifier

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JSON = {"content-type": "application/json"}


# -- the naive service (uvicorn imports this module: ``--app-dir benchmarks service:naive_app``)


class Text(BaseModel):
    text: str


def naive_app() -> FastAPI:
    """The service written the naive way, serving the model file ``$ASYNCCLF_MODEL``.

    An app factory (``uvicorn --factory``): each request runs its own one-text
    ``predict_proba`` in Starlette's thread pool; nothing is batched.
    """
    path = os.environ["ASYNCCLF_MODEL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clf: AsyncClassifier = await AsyncClassifier.load(path)
        app.state.estimator = clf.estimator_
        app.state.classes = clf.classes_.tolist()
        yield

    app = FastAPI(title="naive service", lifespan=lifespan)

    @app.post("/classify")
    async def classify(body: Text, request: Request) -> dict[str, Any]:
        estimator = request.app.state.estimator
        proba = await run_in_threadpool(estimator.predict_proba, [body.text])
        best = int(proba[0].argmax())
        return {"label": request.app.state.classes[best], "score": float(proba[0, best])}

    @app.post("/noop")
    async def noop(body: Text) -> dict[str, Any]:
        return {"label": "", "score": 0.0}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


# -- servers


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far, all its threads (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(name: str, app: list[str], env: dict[str, str], logs: Path) -> Iterator[Server]:
    """Run ``uvicorn <app>`` (one worker) on a free loopback port until ``/healthz`` answers."""
    port = free_port()
    stderr = logs / f"{name}.stderr"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with open(stderr, "wb") as errors:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=errors,
            stderr=errors,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, stderr)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                sys.exit(f"the {name} server exited ({process.returncode}):\n{stderr.read_text()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the {name} server did not answer /healthz in 180 s")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def health(server: Server) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.url}/healthz", timeout=10).json()
    return answer


# -- load


@dataclass
class Run:
    requests: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    server_cpu: float
    client_cpu: float
    batcher: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds


async def drive(
    server: Server, path: str, bodies: list[bytes], requests: int, concurrency: int
) -> tuple[float, list[float], Counter[str]]:
    """POST ``requests`` bodies to ``path`` from ``concurrency`` workers, in text order.

    Each worker keeps one HTTP/1.1 connection and writes its requests and reads its
    answers by hand (a status line, headers with the content length, the body): a
    load generator that costs the shared cores far less per request than an HTTP
    client library. Returns the wall time, the latency of each 200 answer and a count
    of the errors (a worker whose connection fails counts the error and reconnects).
    """
    host, port = server.url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    payloads = [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < requests:
            try:
                async with await anyio.connect_tcp(host, int(port)) as stream:
                    answers = BufferedByteReceiveStream(stream)
                    while sent < requests:
                        payload = payloads[sent % len(payloads)]
                        sent += 1
                        started = time.perf_counter()
                        await stream.send(payload)
                        status, length = parse_head(
                            await answers.receive_until(b"\r\n\r\n", 1 << 16)
                        )
                        body = await answers.receive_exactly(length)
                        if status == 200:
                            latencies.append(time.perf_counter() - started)
                        else:
                            errors[f"HTTP {status}: {body[:80].decode(errors='replace')}"] += 1
            except Exception as error:  # counted, not raised: an error is a result here
                errors[f"{type(error).__name__}: {str(error)[:80]}"] += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as workers:
        for _ in range(concurrency):
            workers.start_soon(worker)
    return time.perf_counter() - started, latencies, errors


def parse_head(head: bytes) -> tuple[int, int]:
    """The status and the content length of an HTTP/1.1 answer's head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    msg = f"no content-length in {head[:200]!r}"
    raise ValueError(msg)


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The batcher's cumulative counters, as sums that can be differenced."""
    stats = (await client.get("/healthz")).json()["statistics"]
    return {
        "batches": stats["batches"],
        "items": stats["items"],
        "wait": stats["mean_wait"] * stats["items"],
        "run": stats["mean_run"] * stats["batches"],
    }


async def measure(
    server: Server,
    path: str,
    bodies: list[bytes],
    requests: int,
    concurrency: int,
    request_timeout: float,
) -> Run:
    """One run: a warm-up that opens the client's connections, then ``requests`` timed."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=server.url, limits=limits, timeout=request_timeout
    ) as client:
        await drive(
            server, path, bodies[::-1], min(requests, max(500, 2 * concurrency)), concurrency
        )
        batcher = server.name == "asyncclf"
        before = await counters(client) if batcher else {}
        server_cpu = cpu_seconds(server.process.pid)
        client_cpu = time.process_time()
        seconds, latencies, errors = await drive(server, path, bodies, requests, concurrency)
        client_cpu = time.process_time() - client_cpu
        server_cpu = cpu_seconds(server.process.pid) - server_cpu
        run = Run(requests, seconds, latencies, errors, server_cpu, client_cpu)
        if batcher:
            after = await counters(client)
            run.batcher = {key: after[key] - before[key] for key in after}
    return run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(concurrency: int, runs: dict[str, list[Run]]) -> None:
    rounds = len(runs["asyncclf"])
    requests = runs["asyncclf"][0].requests
    print(f"\nconcurrency {concurrency}: {requests:,} requests per run, {rounds} round(s)")
    print(
        f"  {'service':10} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'server CPU ms/req':>18} {'client CPU ms/req':>18}"
    )
    for name, measured in runs.items():
        latencies = [lat for run in measured for lat in run.latencies]
        errors: Counter[str] = Counter()
        for run in measured:
            errors.update(run.errors)
        total = sum(run.requests for run in measured)
        print(
            f"  {name:10} {statistics.median(r.per_second for r in measured):10,.0f}"
            f" {percentile(latencies, 0.5) * 1e3:8.1f} {percentile(latencies, 0.99) * 1e3:8.1f}"
            f" {sum(errors.values()):7,}"
            f" {sum(r.server_cpu for r in measured) / total * 1e3:18.2f}"
            f" {sum(r.client_cpu for r in measured) / total * 1e3:18.2f}"
        )
        if errors:
            print(f"    errors: {dict(errors)}")
    ratios = [
        a.per_second / n.per_second for a, n in zip(runs["asyncclf"], runs["naive"], strict=True)
    ]
    spread = f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)})" if rounds > 1 else ""
    print(f"  asyncclf/naive requests/s: {statistics.median(ratios):.2f}{spread}")
    sums = Counter[str]()
    for run in runs["asyncclf"]:
        sums.update(run.batcher)
    if sums["batches"]:
        print(
            f"  asyncclf batcher in these runs: {sums['batches']:,.0f} batches, mean size "
            f"{sums['items'] / sums['batches']:.1f}, mean wait "
            f"{sums['wait'] / sums['items'] * 1e3:.2f} ms, mean run "
            f"{sums['run'] / sums['batches'] * 1e3:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 requests per run")
    parser.add_argument("--requests", type=int, help="requests per run (default 20,000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--rounds", type=int, default=1, help="asyncclf/naive/no-model runs per level"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    args = parser.parse_args()
    requests: int = args.requests or (2_000 if args.quick else 20_000)

    train_x, train_y, test_x, _ = news_split()
    bodies = [json.dumps({"text": text}).encode() for text in test_x]

    async def fit() -> AsyncClassifier:
        return await AsyncClassifier().fit(train_x, train_y)

    started = time.perf_counter()
    clf: AsyncClassifier = anyio.run(fit)
    fitted = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        logs = Path(directory)
        model = logs / "model.skops"
        digest: str = anyio.run(clf.save, model)
        print(
            f"20 Newsgroups: trained on {len(train_x):,} texts in {fitted:.0f} s; "
            f"{len(test_x):,} test texts, mean body {sum(map(len, bodies)) / len(bodies):,.0f} B; "
            f"model file {model.stat().st_size / 2**20:.1f} MiB"
        )
        env = {"ASYNCCLF_MODEL": str(model), "ASYNCCLF_MODEL_SHA256": digest}
        servers = {
            "asyncclf": stack.enter_context(
                serve("asyncclf", ["examples.fastapi_service:app"], env, logs)
            ),
            "naive": stack.enter_context(
                serve(
                    "naive", ["--factory", "--app-dir", str(HERE), "service:naive_app"], env, logs
                )
            ),
        }
        print(
            f"servers: uvicorn, one worker each, on {os.cpu_count()} cores shared with the "
            f"client (pids: asyncclf {servers['asyncclf'].process.pid}, "
            f"naive {servers['naive'].process.pid})"
        )

        # Both serve the same model: the same label for the same text.
        with httpx.Client(timeout=30) as client:
            for body in bodies[:50]:
                answers = [
                    client.post(f"{s.url}/classify", content=body, headers=JSON)
                    for s in servers.values()
                ]
                labels = {answer.json()["label"] for answer in answers}
                if len(labels) != 1:
                    sys.exit(f"the services disagree on a text: {labels}")

        # Each round: asyncclf, naive, then the same requests to an endpoint that parses
        # the body and answers without a model (the client, uvicorn and FastAPI alone).
        plan = [
            ("asyncclf", servers["asyncclf"], "/classify"),
            ("naive", servers["naive"], "/classify"),
            ("no model", servers["naive"], "/noop"),
        ]
        for concurrency in args.concurrency:
            runs: dict[str, list[Run]] = {name: [] for name, _, _ in plan}
            for _ in range(args.rounds):
                for name, server, path in plan:
                    run = anyio.run(
                        measure, server, path, bodies, requests, concurrency, args.timeout
                    )
                    runs[name].append(run)
            report(concurrency, runs)

        stats = health(servers["asyncclf"])["statistics"]
        print(
            "\nasyncclf server's batcher statistics at the end (GET /healthz, warm-ups included):"
        )
        for key, value in stats.items():
            if any(part in key for part in ("wait", "run", "latency")):
                print(f"  {key:20} {value * 1e3:10.2f} ms")
            else:
                print(
                    f"  {key:20} {value:10,.2f}"
                    if isinstance(value, float)
                    else f"  {key:20} {value:10,}"
                )

        stack.close()
        for server in servers.values():
            text = server.stderr.read_text().strip()
            if text:
                print(f"\n{server.name} server's stderr:\n{text}")


if __name__ == "__main__":
    main()
