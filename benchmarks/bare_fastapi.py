"""The framework's ceiling for the serving benchmark: a bare FastAPI app under the same
uvicorn settings as the sidecar (:func:`churn_serving.server.run`), answering ``POST
/predict`` with a fixed body of the size of a real answer (the request body is read).

``python -m benchmarks.bare_fastapi --port P --answer FILE``
"""

import argparse
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app(answer: bytes) -> FastAPI:
    """FastAPI app: ``POST /predict`` → ``answer``, ``GET /ready`` → 200."""
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", type=Path, required=True)
    args = parser.parse_args()
    sys.setswitchinterval(0.001)  # as the sidecar
    config = uvicorn.Config(
        create_app(args.answer.read_bytes()),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        loop="auto",
        http="auto",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
