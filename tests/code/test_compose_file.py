"""The production stack's files agree with the code (no services started).

docker-compose.yml, .env.example, the Dockerfile, deploy/ (Dagster instance, workspace,
Prometheus, Grafana, Kubernetes) and docs/production.md are parsed and checked against the
code: service names, commands, ports, health checks, dependencies, secrets, and every
environment variable the code reads. tests/integration/test_production_stack.py runs the
same commands as real processes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO
from tests.integration.production import COMPOSE_VAR, Compose, environment, interpolate

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY = REPO / "deploy"
INSTANCE = DEPLOY / "dagster.production.yaml"
DOCS = REPO / "docs" / "production.md"

SERVICES = {
    "postgres",
    "minio",
    "minio-init",
    "mlflow",
    "code-location",
    "dagster-webserver",
    "dagster-init",
    "dagster-daemon",
    "churn-serving",
    "prometheus",
    "alertmanager",
    "grafana",
}
ONE_SHOT = {"minio-init", "dagster-init"}
OUR_CODE = {"code-location", "dagster-webserver", "dagster-init", "dagster-daemon", "churn-serving"}
DAGSTER = {"code-location", "dagster-webserver", "dagster-init", "dagster-daemon"}
DEPENDS = {
    "minio-init": {"minio"},
    "mlflow": {"postgres", "minio-init"},
    "code-location": {"postgres", "minio-init", "mlflow"},
    "dagster-webserver": {"postgres", "code-location"},
    "dagster-init": {"postgres"},
    "dagster-daemon": {"postgres", "dagster-init", "code-location"},
    "churn-serving": {"minio-init"},
    "prometheus": {"churn-serving"},
    "grafana": {"prometheus"},
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|ACCESS_KEY)")


# ---------------------------------------------------------------------------- helpers


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dotenv_example() -> dict[str, str]:
    """.env.example as a dict (KEY=value lines; comments and blanks skipped; a value in
    matching quotes without them, as compose reads it)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[key.strip()] = value
    return out


def test_env_example_can_be_sourced_by_a_shell():
    """`set -a; . ./.env` (processes started by hand, as docs/production.md's compose
    services) ran `CHURN_RETRAINING_CRON=0 * * * *` as the command `*` with the file names
    of the folder as arguments; every value now reads the same in a shell as in compose."""
    script = f"set -a; . '{ENV_EXAMPLE}'; env -0"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stderr == ""
    shell = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    assert {k: shell.get(k) for k in dotenv_example()} == dotenv_example()


def compose_with_example() -> Compose:
    """docker-compose.yml interpolated with .env.example's values (what compose would run)."""
    return Compose(dotenv_example(), {})


def strings(node) -> list[str]:
    """Every string in a parsed YAML document (comments are gone)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def referenced_variables() -> dict[str, set[str]]:
    """``${NAME...}`` references in docker-compose.yml: name → operators used ('' for none)."""
    refs: dict[str, set[str]] = {}
    for text in strings(raw_compose()):
        for m in COMPOSE_VAR.finditer(text):
            if m.group(0) != "$$":
                refs.setdefault(m.group(1), set()).add(m.group(2) or "")
    return refs


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def code_files() -> list[Path]:
    return sorted(p for d in ("churn_assets", "churn_serving") for p in (REPO / d).rglob("*.py"))


ENV_NAME = re.compile(r"\b((?:CHURN|MLFLOW|AWS|DAGSTER)_[A-Z0-9_]*[A-Z0-9])\b")
ENV_CALL = re.compile(
    r"""(?:environ\.get|getenv|environ\.setdefault|environ)\s*[(\[]\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def variables_read_by_code() -> set[str]:
    """Every environment variable the code reads: ``CHURN_``/``MLFLOW_``/``AWS_``/
    ``DAGSTER_`` names in the source, names passed to ``os.environ``/``getenv``, and the
    pydantic-settings fields with their prefixes (ChurnSettings, the sidecar's settings)."""
    names: set[str] = set()
    for path in code_files():
        text = path.read_text()
        names |= set(ENV_NAME.findall(text)) | set(ENV_CALL.findall(text))
    from churn_assets.lib.settings import ChurnSettings
    from churn_serving.settings import ServingSettings

    names |= settings_variables(ChurnSettings) | settings_variables(ServingSettings)
    return names


def sidecar_routes(tmp_path: Path) -> set[str]:
    """The paths the sidecar's FastAPI app serves (built without starting its threads)."""
    from churn_assets.lib.storage import Storage
    from churn_serving.app import create_app
    from churn_serving.settings import ServingSettings

    app = create_app(ServingSettings(), storage=Storage(str(tmp_path)), background=False)
    return {route.path for route in app.routes}


def settings_variables(cls) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def instance_env_variables() -> set[str]:
    """Environment variables deploy/dagster.production.yaml reads (``{env: NAME}``)."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(INSTANCE.read_text()))
    return found


def validate_instance(text: str, tmp_path: Path) -> dict:
    """Validate an instance yaml as Dagster does when it loads it, without connecting:
    the instance schema (storage, concurrency, ...) and each configurable class's import
    and config schema (run coordinator, run launcher, ...). Raises on any error."""
    from dagster._config import validate_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    home = tmp_path / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    (home / "dagster.yaml").write_text(text)
    config, _ = dagster_instance_config(str(home))
    for key, entry in config.items():
        if isinstance(entry, dict) and {"module", "class"} <= set(entry):
            klass = getattr(importlib.import_module(entry["module"]), entry["class"])
            result = validate_config(klass.config_type(), entry.get("config") or {})
            if not result.success:
                raise DagsterInvalidConfigError(f"{key} config", result.errors, entry)
    return config


# --------------------------------------------------------------------- docker-compose.yml


#: service keys of the Compose specification used here or likely to be (a typo fails)
SERVICE_KEYS = {
    "build", "command", "container_name", "cpus", "depends_on", "deploy", "entrypoint",
    "env_file", "environment", "expose", "extra_hosts", "healthcheck", "hostname", "image",
    "init", "labels", "logging", "mem_limit", "networks", "ports", "profiles", "read_only",
    "restart", "security_opt", "shm_size", "stop_grace_period", "stop_signal", "tmpfs",
    "ulimits", "user", "volumes", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}


def test_every_service_exists():
    compose = raw_compose()
    assert set(compose["services"]) == SERVICES
    assert set(compose) - {"name", "services", "volumes"} == {
        k for k in compose if k.startswith("x-")
    }
    for name, svc in compose["services"].items():
        assert set(svc) <= SERVICE_KEYS, (name, set(svc) - SERVICE_KEYS)
        assert set(svc.get("healthcheck", {})) <= HEALTHCHECK_KEYS, name
        assert "image" in svc or "build" in svc, name
    named = {
        v.split(":", 1)[0]
        for svc in compose["services"].values()
        for v in svc.get("volumes", [])
        if not v.startswith(".")
    }
    assert named == set(compose["volumes"]), "named volumes must be declared (and used)"


def test_health_checks_on_every_long_running_service():
    services = raw_compose()["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", name
            assert "healthcheck" not in svc, name
        else:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
            assert svc.get("restart") == "unless-stopped", name


def test_dependencies_wait_for_health_or_completion():
    services = raw_compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        assert set(deps) == DEPENDS.get(name, set()), name
        for dep, spec in deps.items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec == {"condition": expected}, (name, dep, spec)


def test_no_literal_secrets():
    refs = referenced_variables()
    for name, svc in raw_compose()["services"].items():
        for key, value in environment(svc).items():
            assert "change-me" not in value, (name, key)
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*|:-)\}", value), (name, key, value)
        for arg in svc.get("command") or []:
            if "://" in arg and "@" in arg:  # credentials in a URL
                userinfo = arg.split("://", 1)[1].split("@", 1)[0]
                assert re.fullmatch(r"(\$\{[A-Z_]+:\?[^}]*\}:?)+", userinfo), (name, arg)
    for name, ops in refs.items():
        if SECRET_NAME.search(name) and name != "CHURN_SERVING_ADMIN_TOKEN":
            assert ops == {":?"}, f"{name} must be required (${{{name}:?...}}), got {ops}"
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_env_example_lists_every_variable_with_placeholders():
    example = dotenv_example()
    refs = referenced_variables()
    assert set(refs) == set(example), {
        "missing from .env.example": sorted(set(refs) - set(example)),
        "unused in docker-compose.yml": sorted(set(example) - set(refs)),
    }
    for name, value in example.items():
        if "PASSWORD" in name or "SECRET" in name:
            assert value == "change-me", name
        if ":?" in refs[name]:
            assert value, f"{name} is required by docker-compose.yml but empty"
    compose_with_example()  # every required variable has a value: interpolation succeeds


def test_compose_profile_matches_the_code_defaults():
    from churn_assets.lib.settings import COMPOSE_DEFAULTS

    env = compose_with_example().env("code-location")
    assert env["CHURN_STORAGE_URL"] == COMPOSE_DEFAULTS["storage_url"]
    assert env["CHURN_S3_ENDPOINT_URL"] == COMPOSE_DEFAULTS["s3_endpoint_url"]
    assert env["MLFLOW_TRACKING_URI"] == COMPOSE_DEFAULTS["mlflow_tracking_uri"]


def test_services_running_our_code_get_the_platform_environment():
    c = compose_with_example()
    raw = raw_compose()["services"]
    bucket = dotenv_example()["CHURN_BUCKET"]
    for name in OUR_CODE | {"mlflow"}:
        assert raw[name]["build"]["dockerfile"] == "Dockerfile", name
        if name == "churn-serving":  # the slim serving image
            assert raw[name]["build"]["target"] == "serving"
            assert raw[name]["image"] != raw["code-location"]["image"]
        else:
            assert raw[name]["image"] == raw["code-location"]["image"], name
    for name in OUR_CODE:
        env = c.env(name)
        assert env["CHURN_ENV"] == "compose", name
        assert env["CHURN_STORAGE_URL"] == f"s3://{bucket}/storage", name
        assert env["CHURN_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), name
    for name in DAGSTER:
        env = c.env(name)
        assert env["DAGSTER_HOME"] == "/opt/dagster/home", name
        assert instance_env_variables() <= set(env), name
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert env["DAGSTER_POSTGRES_PORT"] == "5432"
    # the sidecar does not get the database password
    assert not {k for k in c.env("churn-serving") if k.startswith("DAGSTER_POSTGRES")}


def test_databases_and_mlflow_backend():
    init = (DEPLOY / "postgres" / "init.sql").read_text()
    databases = set(re.findall(r"CREATE DATABASE (\w+)", init))
    assert databases == {"dagster", "mlflow"}
    mounts = raw_compose()["services"]["postgres"]["volumes"]
    assert "./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/init.sql:ro" in mounts
    c = compose_with_example()
    assert c.env("code-location")["DAGSTER_POSTGRES_DB"] in databases
    argv = c.command("mlflow")
    backend = option(argv, "--backend-store-uri")
    assert re.fullmatch(r"postgresql\+psycopg2://[^:@]+:[^@]+@postgres:5432/mlflow", backend)
    bucket = dotenv_example()["CHURN_BUCKET"]
    assert option(argv, "--artifacts-destination") == f"s3://{bucket}/mlflow"
    assert "--serve-artifacts" in argv
    assert c.env("mlflow")["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing mlflow.server
def test_mlflow_accepts_the_host_header_its_clients_send():
    from mlflow.server.security_utils import is_allowed_host_header

    argv = compose_with_example().command("mlflow")
    allowed = [h.strip() for h in option(argv, "--allowed-hosts").split(",")]
    uri = compose_with_example().env("code-location")["MLFLOW_TRACKING_URI"]
    host = uri.split("://", 1)[1].rstrip("/")
    assert host == f"mlflow:{option(argv, '--port')}"
    assert is_allowed_host_header(allowed, host)
    assert is_allowed_host_header(allowed, "localhost:5000")  # the health check
    assert not is_allowed_host_header(allowed, "evil.example.com")


def test_commands_and_ports_match_the_code():
    c = compose_with_example()
    raw = raw_compose()["services"]
    for exe in ("dagster", "dagster-webserver", "dagster-daemon", "churn", "mlflow"):
        assert (BIN / exe).exists(), exe

    web = c.command("dagster-webserver")
    assert Path(web[0]).name == "dagster-webserver"
    assert option(web, "-p") == "3000" and option(web, "-h") == "0.0.0.0"
    assert "127.0.0.1:3000:3000" in raw["dagster-webserver"]["ports"]
    assert ":3000" in (REPO / "README.md").read_text()

    wrapped = c.command("code-location")
    sweep, code = wrapped[: wrapped.index("--")], wrapped[wrapped.index("--") + 1 :]
    assert Path(sweep[0]).name == "churn" and sweep[1] == "fail-interrupted-runs"
    assert code[:4] == ["dagster", "code-server", "start", "-h"]
    module = option(code, "-m")
    assert module == "churn_assets.definitions" and importlib.util.find_spec(module)
    grpc_port = option(code, "-p")
    assert c.healthcheck("code-location")[1:] == ["api", "grpc-health-check", "-p", grpc_port]

    workspace = yaml.safe_load((DEPLOY / "workspace.grpc.yaml").read_text())["load_from"]
    local = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    server = workspace[0]["grpc_server"]
    assert server["host"] == "code-location" and str(server["port"]) == grpc_port
    location = local[0]["python_module"]["location_name"]
    assert server["location_name"] == location == option(code, "--location-name")
    assert option(sweep, "--location") == location
    assert option(web, "-w") == "/opt/dagster/workspace.yaml"
    assert option(c.command("dagster-daemon"), "-w") == "/opt/dagster/workspace.yaml"
    assert c.command("dagster-daemon")[1] == "run"

    sidecar = c.command("churn-serving")
    assert Path(sidecar[0]).name == "churn-serve" and option(sidecar, "--host") == "0.0.0.0"
    port = option(sidecar, "--port")
    from churn_serving.settings import ServingSettings

    assert int(port) == ServingSettings.model_fields["port"].default
    assert f"127.0.0.1:{port}:{port}" in raw["churn-serving"]["ports"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["churn-serve"] == "churn_serving.server:main"
    health = " ".join(c.healthcheck("churn-serving"))
    assert f"localhost:{port}/health" in health  # liveness: /ready is 503 before a deploy


def test_dockerfile_installs_the_instance_and_workspace():
    text = (REPO / "Dockerfile").read_text()
    assert 'pip install ".[serving]"' in text
    # the slim serving target: the serving extra and the package without its dependencies
    assert "AS serving" in text and "['optional-dependencies']['serving']" in text
    assert "pip install --prefix=/install --no-deps ." in text
    assert "ENV" in text and "DAGSTER_HOME=/opt/dagster/home" in text
    assert "COPY deploy/dagster.production.yaml ${DAGSTER_HOME}/dagster.yaml" in text
    assert "COPY deploy/workspace.grpc.yaml /opt/dagster/workspace.yaml" in text
    assert re.search(r"^USER \w+", text, re.M), "the image runs as an unprivileged user"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


# -------------------------------------------------------------------- Prometheus, Grafana


def test_prometheus_scrapes_the_sidecar(tmp_path):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "churn-serving")
    port = option(compose_with_example().command("churn-serving"), "--port")
    assert job["static_configs"][0]["targets"] == [f"churn-serving:{port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "/metrics" in sidecar_routes(tmp_path)
    mounts = raw_compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make test installs prometheus when root)")
    done = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_the_dashboard():
    grafana = DEPLOY / "grafana"
    sources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    source = sources["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    providers = yaml.safe_load((grafana / "provisioning/dashboards/dashboards.yml").read_text())
    mounts = raw_compose()["services"]["grafana"]["volumes"]
    path = providers["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    dashboard = json.loads((grafana / "dashboards" / "churn.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Request rate",
        "p95 latency",
        "Error rate",
        "Predictions by label",
        "Fallback levels",
        "Model version",
    } <= titles
    for panel in dashboard["panels"]:
        if panel["type"] != "text":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert panel["targets"], panel["title"]


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "churn.json").read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names |= set(re.findall(r"\b(churn_[a-z0-9_]+)", target["expr"]))
    return names


def test_dashboard_queries_name_metrics_the_sidecar_exports(tmp_path):
    from tests.code.test_alert_rules import exported_metric_names

    exported = exported_metric_names(tmp_path)  # with the drift and version gauges set
    assert dashboard_metric_names() <= exported, dashboard_metric_names() - exported


# ------------------------------------------------------------------- the Dagster instance


def test_production_instance_is_valid(tmp_path):
    config = validate_instance(INSTANCE.read_text(), tmp_path)
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    assert all(set(v) == {"env"} for k, v in db.items() if k != "scheme"), db
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"


def test_production_instance_keeps_the_limits_of_the_default():
    prod = yaml.safe_load(INSTANCE.read_text())
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key in ("concurrency", "run_coordinator", "retention"):
        assert prod[key] == default[key], key
    assert prod["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}


#: a typo in the production instance → (original, typo, the error it must raise, the words
#: the message must contain so the typo can be found)
TYPOS = {
    "pools key": ("granularity: run", "granularty: run", "config", 'entry "granularty"'),
    "runs key": (
        "max_concurrent_runs: 4",
        "max_concurent_runs: 4",
        "config",
        'entry "max_concurent_runs"',
    ),
    "postgres key": (
        "scheme: postgresql+psycopg2",
        "schema: postgresql+psycopg2",
        "config",
        'entry "schema"',
    ),
    "granularity value": ("granularity: run", "granularity: runs", "config", "`runs`"),
    "launcher class": (
        "class: DefaultRunLauncher",
        "class: DefaultRunLaunchr",
        "class",
        "DefaultRunLaunchr",
    ),
    "coordinator module": (
        "module: dagster._core.run_coordinator",
        "module: dagster.nope",
        "module",
        "dagster.nope",
    ),
    "top-level key": ("run_monitoring:", "run_monitorng:", "config", 'entry "run_monitorng"'),
}


@pytest.mark.parametrize("typo", sorted(TYPOS))
def test_instance_validation_catches_typos(typo, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    old, new, kind, words = TYPOS[typo]
    error = {
        "config": DagsterInvalidConfigError,
        "class": AttributeError,
        "module": ModuleNotFoundError,
    }[kind]
    text = INSTANCE.read_text()
    assert old in text
    validate_instance(text, tmp_path)  # the file as shipped is valid
    with pytest.raises(error, match=re.escape(words)):
        validate_instance(text.replace(old, new, 1), tmp_path)


# ----------------------------------------------------------------- environment variables


def test_every_variable_the_code_reads_is_documented():
    docs = DOCS.read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", docs))
    missing = variables_read_by_code() - documented
    assert not missing, f"add to the table in docs/production.md: {sorted(missing)}"


def test_every_churn_variable_set_in_compose_is_read_by_the_code():
    read = variables_read_by_code()
    c = compose_with_example()
    for name in SERVICES:
        for key in c.env(name):
            if key.startswith("CHURN_") and name != "minio-init":
                assert key in read, f"{name}: {key} is not read by the code (typo?)"
    assert instance_env_variables() <= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", DOCS.read_text()))


def test_interpolation_follows_compose_rules():
    values = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:?m}-${EMPTY:-d}-${UNSET-d}-$${SET}", values) == "x-d-d-${SET}"
    with pytest.raises(KeyError):
        interpolate("${UNSET:?set in .env}", values)


# --------------------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name != "values.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_helm_values_for_the_dagster_chart():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert option(args, "--module-name") == "churn_assets.definitions"
    assert option(args, "--location-name") == "churn_assets"
    prod = yaml.safe_load(INSTANCE.read_text())["concurrency"]
    assert values["concurrency"]["pools"] == {
        "granularity": prod["pools"]["granularity"],
        "defaultLimit": prod["pools"]["default_limit"],
    }
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == prod["runs"]["max_concurrent_runs"]
    text = (DEPLOY / "k8s" / "values.yaml").read_text()
    assert "password:" not in text.lower().replace("postgresql-password", "")


def test_training_steps_carry_their_pod_resources():
    """Under dagster-k8s's ``k8s_job_executor`` every step is its own pod: the two model
    sets ask for their CPUs and memory through the ``dagster-k8s/config`` op tag."""
    from churn_assets.definitions import defs
    from churn_assets.models.assets import TRAINING_STEP_TAGS

    for key in ("classification_models", "regression_models"):
        config = json.loads(defs.get_assets_def(key).op.tags["dagster-k8s/config"])
        assert config == TRAINING_STEP_TAGS["dagster-k8s/config"]
        resources = config["container_config"]["resources"]
        gib = {k: int(v["memory"].removesuffix("Gi")) for k, v in resources.items()}
        assert 0 < gib["requests"] <= gib["limits"]
        assert float(resources["requests"]["cpu"]) >= 1


def test_sidecar_manifests(tmp_path):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    deployment = docs[("Deployment", "churn-serving")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(option(container["command"], "--port"))
    assert ports == {"http": port}
    from churn_serving.settings import ServingSettings

    assert port == ServingSettings.model_fields["port"].default
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"/ready", "/health"} <= sidecar_routes(tmp_path)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = docs[("Service", "churn-serving")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = docs[("HorizontalPodAutoscaler", "churn-serving")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "churn-serving")
    assert hpa["spec"]["minReplicas"] >= 2
    config_maps = {n for (k, n) in docs if k == "ConfigMap"}
    refs = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
    assert refs <= config_maps


def test_k8s_environment_is_the_compose_environment():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    data = docs[("ConfigMap", "churn-env")]["data"]
    compose_keys = set(compose_with_example().env("code-location"))
    assert set(data) <= compose_keys, set(data) - compose_keys
    secret_in_configmap = {k for k in data if SECRET_NAME.search(k)}
    assert not secret_in_configmap


def _run_minio_init(tmp_path: Path, values: dict[str, str]) -> tuple[int, str, list[str]]:
    """minio-init's script as compose would run it, against a stub ``mc`` that logs calls."""
    svc = Compose(values, {}).services["minio-init"]
    assert svc["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = svc["command"]
    stub = tmp_path / "bin" / "mc"
    stub.parent.mkdir(exist_ok=True)
    log = tmp_path / "mc.log"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    stub.chmod(0o755)
    env = {
        **environment(svc),
        "PATH": f"{stub.parent}:/usr/bin:/bin",
        "TMPDIR": str(tmp_path),
    }
    script = script.replace("/tmp/churn-policy.json", str(tmp_path / "policy.json"))
    done = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


def test_minio_init_refuses_placeholders(tmp_path):
    code, out, calls = _run_minio_init(tmp_path, dotenv_example())
    assert code == 1 and "change-me" in out and calls == []


def test_minio_init_creates_bucket_policy_and_key(tmp_path):
    values = {
        **dotenv_example(),
        "MINIO_ROOT_PASSWORD": "root-secret",
        "AWS_SECRET_ACCESS_KEY": "platform-secret",
    }
    code, out, calls = _run_minio_init(tmp_path, values)
    assert code == 0, out
    bucket, key = values["CHURN_BUCKET"], values["AWS_ACCESS_KEY_ID"]
    assert calls[0] == f"alias set local http://minio:9000 {values['MINIO_ROOT_USER']} root-secret"
    assert f"mb --ignore-existing local/{bucket}" in calls
    assert f"admin user add local {key} platform-secret" in calls
    assert f"admin policy attach local churn-platform --user {key}" in calls
    policy = json.loads((tmp_path / "policy.json").read_text())
    assert policy["Statement"][0]["Resource"] == [
        f"arn:aws:s3:::{bucket}",
        f"arn:aws:s3:::{bucket}/*",
    ]


def test_postgres_health_check_is_valid_shell():
    test = Compose(dotenv_example(), {}).services["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    done = subprocess.run(["/bin/sh", "-n", "-c", test[1]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "-h 127.0.0.1" in test[1] and "-d mlflow" in test[1] and "-d dagster" in test[1]
