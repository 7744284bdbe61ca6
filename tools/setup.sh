#!/usr/bin/env bash
# setup.sh — install what flashgen needs to build and test on Debian 12, idempotently:
# Debian packages (compiler, libmicrohttpd, cJSON, libuv, Criterion, promtool, docker and
# docker-compose: Debian 12's docker.io has no `docker compose` plugin, its docker-compose package
# is Compose 1.29, the `docker-compose` command; chromium, whose headless mode is the browser of
# tests/http/test_cors_browser.py) and the Python packages of the black-box tests.
# Skips what is already there. Run as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PKGS=(build-essential pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev libcriterion-dev
          python3 python3-pip curl unzip prometheus docker.io docker-compose debootstrap clang
          libclang-rt-14-dev llvm clang-format chromium)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY -c 'import pytest, openai, huggingface_hub, gguf, numpy, safetensors, requests, jsonschema, kubernetes_validate, yaml, langchain_openai, tokenizers' 2>/dev/null; then
    echo "setup: installing Python test packages"
    $PY -m pip install -q -r tests/requirements.txt
fi
