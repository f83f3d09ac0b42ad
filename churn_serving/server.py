"""``churn serve`` / ``churn-serve``: run the sidecar with uvicorn (one process, uvloop +
httptools)."""

from __future__ import annotations

import logging
import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def port_problem(host: str, port: int, what: str, setting: str) -> str | None:
    """Why ``what`` cannot listen on ``host:port``, naming the ``setting`` that moves it:
    another program holds the port, or the address is not one of this machine's (IPv6
    addresses such as ``::`` are tried as IPv6); None when it can listen there."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as e:
        return f"{what}: cannot listen on {host!r} ({e.strerror or e}): {_ADDRESS_HINT}"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                return f"{what}: cannot listen on {host} ({e.strerror}): {_ADDRESS_HINT}"
            return (
                f"port {port} on {host} ({what}) is taken ({e.strerror}): stop the program "
                f"holding it (`ss -ltnp 'sport = :{port}'` names it) or use {setting}"
            )
    return None


_ADDRESS_HINT = (
    "CHURN_SERVING_HOST takes an address of this machine: 127.0.0.1 (the default), 0.0.0.0 "
    "or :: for every interface, or one interface's address"
)


def run(host: str | None = None, port: int | None = None) -> None:
    """Serve the deployed model version on ``host:port`` (defaults: ``CHURN_SERVING_HOST``,
    ``CHURN_SERVING_PORT``) until interrupted; flushes the inference log on shutdown."""
    from churn_serving.settings import ServingSettings

    settings = ServingSettings()
    # Model prediction runs single-threaded (ONNX Runtime sessions use one intra-op thread
    # below CHURN_SERVING_BATCH_THREADS' batch size): on a small machine, OpenMP/BLAS thread
    # pools fight the event loop and each other.
    for var in _THREAD_VARS:
        os.environ.setdefault(var, str(settings.threads))

    import uvicorn

    from churn_serving.app import create_app

    try:  # present with the training stack (scikit-learn pipelines); absent in the slim image
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.threads)
    except ImportError:
        pass
    # Background threads (reload, inference-log writer) hand the GIL back to the event loop
    # within 1 ms instead of 5 ms: shorter stalls of in-flight requests.
    sys.setswitchinterval(0.001)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host = host or settings.host
    port = settings.port if port is None else port
    # before the data sets load (seconds to minutes): a taken port is said at once
    taken = port and port_problem(
        host, port, "the prediction sidecar", "--port <other> (or CHURN_SERVING_PORT)"
    )
    if taken:
        from churn_serving.datasets import ServingSettingError

        raise ServingSettingError(f"nothing started: {taken}")
    from churn_serving.slow_clients import protocol_with_deadline

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=settings.access_log,
        log_level="info",
        loop="auto",
        http=protocol_with_deadline(settings.request_read_seconds),
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def main() -> None:
    """``churn-serve [--host H] [--port P]``: the sidecar without the platform's CLI (the
    slim serving image has no click, Dagster or scikit-learn)."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve the deployed churn model version.")
    parser.add_argument("--host", default=None, help="bind address (CHURN_SERVING_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (CHURN_SERVING_PORT)")
    args = parser.parse_args()
    from pydantic import ValidationError

    from churn_assets.lib.settings import SettingError, env_flag, validation_message
    from churn_serving.datasets import ServingSettingError

    try:
        run(host=args.host, port=args.port)
    except (ServingSettingError, SettingError, ValidationError) as e:
        if env_flag("CHURN_DEBUG"):
            raise
        sys.exit(f"error: {validation_message(e) if isinstance(e, ValidationError) else e}")


if __name__ == "__main__":  # python -m churn_serving.server
    main()
