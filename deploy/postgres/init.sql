-- Run once by the postgres image on an empty data directory (mounted into
-- /docker-entrypoint-initdb.d/ by docker-compose.yml), as POSTGRES_USER, who owns both.
-- Dagster's tables are created by Dagster on first use, MLflow's by `mlflow server`.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
