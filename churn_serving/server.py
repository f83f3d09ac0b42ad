"""``churn serve`` / ``churn-serve``: run the sidecar with uvicorn (one process, uvloop +
httptools)."""

from __future__ import annotations

import logging
import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        access_log=settings.access_log,
        log_level="info",
        loop="auto",
        http="auto",
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
    from churn_serving.datasets import ServingSettingError

    try:
        run(host=args.host, port=args.port)
    except ServingSettingError as e:
        if os.environ.get("CHURN_DEBUG"):
            raise
        sys.exit(f"error: {e}")


if __name__ == "__main__":  # python -m churn_serving.server
    main()
