# One image for every process of ours in the compose stack (docker-compose.yml): the Dagster
# code location (gRPC server, which also runs the runs), the webserver, the daemon, the
# serving sidecar and the MLflow server. Each service picks its process with `command:`.
#
#   docker build -t churn-platform:local .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    GX_ANALYTICS_ENABLED=false

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

EXPOSE 3000 4000 5000 8000
CMD ["churn", "serve", "--host", "0.0.0.0", "--port", "8000"]
