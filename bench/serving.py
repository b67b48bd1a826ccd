"""Table 5: online scoring, the Ray Serve endpoint of `python -m pipelines serve` (one replica of 1 CPU, HTTP on
127.0.0.1) against the same model called in-process (`ServedModel.score` on the same JSON rows: everything but
HTTP and Serve). Rows of `11_donors.npz`; the model is table 2's (`scoring.register_detector`).

Latency: requests sent one after another (p50 and p99 over `REQUESTS`). Throughput: `CLIENTS` threads sending
requests back to back for `THROUGHPUT_S`, on the same machine as the server (so they share its cores).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import requests

from pipelines.commands.serve import deploy
from pipelines.runtime.online_scoring import ServedModel
from pipelines.settings.model_jobs import ServeConfig
from vae import from_dict

from .context import Setup, feature_names, rows_table
from .scoring import MODEL_NAME, MODEL_ROWS, QUICK_MODEL_ROWS, register_detector
from .tables import Table, num

ROWS_PER_REQUEST = (1, 100)
REQUESTS, QUICK_REQUESTS = 300, 20
CLIENTS = 4
THROUGHPUT_S, QUICK_THROUGHPUT_S = 10.0, 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1000), float(np.percentile(seconds, 99) * 1000)


def _timed(call, times: int) -> list[float]:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        taken.append(time.perf_counter() - started)
    return taken


def _throughput(url: str, rows: list[dict], seconds: float) -> float:
    """Requests per second answered with 200 while CLIENTS threads post `rows` back to back for `seconds`."""
    done, failed = [0] * CLIENTS, [0] * CLIENTS
    stop = threading.Event()

    def client(i: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                ok = session.post(url, json={"rows": rows}, timeout=60).status_code == 200
                done[i] += ok
                failed[i] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if sum(failed):
        raise RuntimeError(f"{sum(failed)} requests to {url} failed during the throughput run")
    return sum(done) / (time.perf_counter() - started)


def run(setup: Setup) -> Table:
    from ray import serve

    x, y = setup.tabular("donors")
    columns = feature_names(x.shape[1])
    detector = register_detector(setup, x, y, columns, QUICK_MODEL_ROWS if setup.quick else MODEL_ROWS)
    in_process = ServedModel.of(detector, f"{MODEL_NAME}@champion")
    config = from_dict(ServeConfig, {"model": f"{MODEL_NAME}@champion", "port": _free_port(), "replicas": 1,
                                     "tracking": {"tracking_uri": setup.tracking_uri}})  # fmt: skip
    url = f"http://{config.host}:{config.port}/score"
    times = QUICK_REQUESTS if setup.quick else REQUESTS
    table = Table(
        "Table 5. Online scoring: the Ray Serve endpoint vs the model in-process",
        ["rows / request", "in-process p50 ms", "in-process p99 ms", "Serve p50 ms", "Serve p99 ms",
         f"Serve requests/s ({CLIENTS} clients)", "Serve rows/s"],
    )  # fmt: skip
    deploy(config)
    try:
        with requests.Session() as session:
            for size in ROWS_PER_REQUEST:
                rows = json.loads(rows_table(x, size).drop(columns="row_id").to_json(orient="records"))
                local = _percentiles_ms(_timed(lambda rows=rows: in_process.score(rows, 3, False), times))
                post = lambda rows=rows: session.post(url, json={"rows": rows}, timeout=60).raise_for_status()  # noqa: E731
                post()  # the first request of a size warms the replica up
                remote = _percentiles_ms(_timed(post, times))
                rate = _throughput(url, rows, QUICK_THROUGHPUT_S if setup.quick else THROUGHPUT_S)
                table.add(size, num(local[0]), num(local[1]), num(remote[0]), num(remote[1]), num(rate, 1),
                          num(rate * size, 0))  # fmt: skip
    finally:
        serve.shutdown()
    table.notes += [
        f"{times} requests one after another per size for the latencies; throughput: {CLIENTS} client threads in "
        f"the benchmark process for {QUICK_THROUGHPUT_S if setup.quick else THROUGHPUT_S:g} s, none failed.",
        f"Serve: 1 replica of 1 CPU, batches of up to {config.max_batch_size} requests waiting at most "
        f"{config.batch_wait_ms:g} ms; the clients share the machine's cores with the replica, the proxy and Ray.",
        "The model: VAE latent 8, hidden [64, 64], 10 features (table 2's); each answer carries the score, the flag "
        "and the top 3 features of every row.",
    ]
    return table
