"""`python -m pipelines serve --model NAME@ALIAS [--host 127.0.0.1] [--port 8000] [key=value ...]`

Online scoring: deploy the Ray Serve application of `pipelines.runtime.online_scoring` on a local Ray (or the
cluster at RAY_ADDRESS) and serve `POST /score` and `GET /healthz` on http://HOST:PORT until interrupted
(Ctrl-C or SIGTERM), then take Serve down (on a cluster: `serve.shutdown`, every Serve application on it).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from pipelines.cli import config_parser
from pipelines.runtime.cluster import logger_levels, on_local_ray, ray_session, verbose
from pipelines.settings.model_jobs import MODEL_SPEC, ServeConfig
from pipelines.settings.yaml_configs import load_config
from pipelines.tracking.registry import resolve_model_version
from pipelines.tracking.runs import resolve_tracking_uri

SERVE_LOGGING = {"log_level": "WARNING"}  # Serve's controller, proxy and replicas log at INFO by default


def _serve_driver_logs() -> contextlib.AbstractContextManager[None]:
    """The `ray.serve` logger of this process at WARNING for one block (at INFO with `--verbose`)."""
    return logger_levels(logging.INFO if verbose() else logging.WARNING, "ray.serve")


def deploy(config: ServeConfig) -> None:
    """Start Serve on the connected Ray with its proxy on `config.host:port`, and deploy the endpoint."""
    from ray import serve

    from pipelines.runtime.online_scoring import APP_NAME, endpoint

    logging_config = None if verbose() else SERVE_LOGGING
    with _serve_driver_logs():
        serve.start(http_options={"host": config.host, "port": config.port}, logging_config=logging_config)
        serve.run(endpoint(config), name=APP_NAME, route_prefix="/", logging_config=logging_config)


def run(config: ServeConfig, stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (by default: until SIGINT or SIGTERM), then shut Serve down. A model that is not
    in the registry (TrackingError) fails before Ray starts."""
    from ray import serve

    spec = MODEL_SPEC.match(config.model)
    version = resolve_model_version(spec["name"], spec["alias"], spec["version"], resolve_tracking_uri(config.tracking))
    with ray_session(config.ray_address, config.local_cpus):
        stop = stop or _stop_on_signals()  # after Ray starts: its driver aborts on SIGTERM otherwise
        try:
            deploy(config)
            print(f"serving {spec['name']}/{version} on http://{config.host}:{config.port}/score (GET /healthz); "
                  f"the alias is checked every {config.alias_poll_s:g} s; Ctrl-C stops", flush=True)  # fmt: skip
            stop.wait()
        finally:
            if not on_local_ray():  # a local Ray ends with the command, Serve with it
                with _serve_driver_logs():
                    serve.shutdown()
    print("stopped", flush=True)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def main(argv: list[str] | None = None) -> None:
    parser = config_parser("serve", __doc__, "serve.yaml", "replicas=2 max_batch_size=32")
    parser.add_argument("--model", help="NAME@ALIAS or NAME/VERSION (the config's model=)")
    parser.add_argument("--host", help="the address to listen on (the config's host=, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="the port to listen on (the config's port=, default 8000)")
    args = parser.parse_args(argv)
    flags = {name: getattr(args, name) for name in ("model", "host", "port") if getattr(args, name) is not None}
    run(load_config(args.config, [*args.overrides, *(f"{k}={v}" for k, v in flags.items())], cls=ServeConfig))
