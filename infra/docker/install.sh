#!/usr/bin/env bash
# install.sh torch | install.sh project PROJECT_DIR
# Installs this project into the current Python the same way wherever it runs on a cluster: used by
# infra/docker/Dockerfile (the Kubernetes image) and by the Ray cluster launcher's setup_commands
# (infra/ray/cluster.yaml, cluster-local.yaml), so every head and worker has one environment.
#   torch:   the pinned torch, first; its default Linux wheel on PyPI is the CUDA build GPU workers need.
#   project: this project (editable, so config paths resolve against PROJECT_DIR); its dependencies include
#            psycopg and boto3, so the same environment runs the MLflow server on PostgreSQL with S3 artifacts.
set -euo pipefail
case "${1:-}" in
  torch) pip install --no-cache-dir "torch==2.13.0" ;;
  project) pip install --no-cache-dir -e "${2:?usage: install.sh project PROJECT_DIR}" ;;
  *) echo "usage: install.sh torch | install.sh project PROJECT_DIR" >&2; exit 2 ;;
esac
