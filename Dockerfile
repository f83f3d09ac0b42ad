# Two images (docker-compose.yml):
#
#   serving   the prediction sidecar alone: ONNX Runtime, numpy, pyarrow, fsspec/s3fs, FastAPI,
#             uvicorn, prometheus-client, orjson (the `serving` extra) and our package without
#             its other dependencies: no scikit-learn, Dagster, MLflow or GX.
#               docker build --target serving -t churn-serving:local .
#   platform  (the default, last stage) every other process of ours: the Dagster code
#             location (gRPC server, which also runs the runs), the webserver, the daemon and
#             the MLflow server. Each service picks its process with `command:`.
#               docker build -t churn-platform:local .
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    GX_ANALYTICS_ENABLED=false

# ---------------------------------------------------------------- serving (slim sidecar)
FROM base AS serving-build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY churn_assets ./churn_assets
COPY churn_serving ./churn_serving
COPY benchmarks ./benchmarks
# the `serving` extra is the sidecar's whole dependency list; the package itself goes in
# without its (training) dependencies
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serving']))" > serving.txt \
    && pip install --prefix=/install -r serving.txt \
    && pip install --prefix=/install --no-deps .

FROM base AS serving
COPY --from=serving-build /install /usr/local
RUN useradd --system --uid 10001 --user-group --home-dir /opt/churn --shell /usr/sbin/nologin churn
USER churn
EXPOSE 8000
CMD ["churn-serve", "--host", "0.0.0.0", "--port", "8000"]

# --------------------------------------------------------------------------- platform
FROM base AS platform

# libgomp1: OpenMP runtime of LightGBM and XGBoost
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY churn_assets ./churn_assets
COPY churn_serving ./churn_serving
COPY benchmarks ./benchmarks
# EXTRA_PIP: more packages for a target platform, e.g. "dagster-k8s~=0.29.0" for the
# Kubernetes image (K8sRunLauncher, deploy/k8s/values.yaml); empty for compose
ARG EXTRA_PIP=""
RUN pip install ".[serving]" ${EXTRA_PIP}

# The Dagster instance (PostgreSQL storage, run queue, pools) and the workspace that loads
# the code location from the gRPC server; connection settings come from the environment.
COPY deploy/dagster.production.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.grpc.yaml /opt/dagster/workspace.yaml

# Unprivileged user; $DAGSTER_HOME/storage (compute logs, local artifacts) is a volume
# shared by code-location, webserver and daemon, created here so it belongs to that user.
RUN useradd --system --uid 10001 --user-group --home-dir /opt/dagster --shell /usr/sbin/nologin churn \
    && mkdir -p ${DAGSTER_HOME}/storage \
    && chown -R churn:churn /opt/dagster
USER churn

EXPOSE 3000 4000 5000
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/dagster/workspace.yaml"]
