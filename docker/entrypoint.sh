#!/bin/sh
# flashgen container entrypoint: make sure the model is there, then exec the daemon (PID 1, so
# `docker stop`'s SIGTERM reaches it and it drains in-flight requests before exiting).
#
#   FLASHGEN_MODEL       model path inside the container (default /models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   FLASHGEN_MODEL_URL   if the model file is missing, download it from here first (the /models
#                        volume must be writable by uid 10001)
#   FLASHGEN_MODEL_SHA256  optional checksum of that download
# Every other FLASHGEN_* variable is a `flashgen serve` option; arguments are passed through.
set -eu

model="${FLASHGEN_MODEL:-/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

if [ ! -e "$model" ]; then
    if [ -n "${FLASHGEN_MODEL_URL:-}" ]; then
        echo "flashgen-entrypoint: $model not found; downloading $FLASHGEN_MODEL_URL" >&2
        mkdir -p "$(dirname "$model")"
        tmp="$model.part.$$"
        curl -fL --retry 3 -o "$tmp" "$FLASHGEN_MODEL_URL"
        if [ -n "${FLASHGEN_MODEL_SHA256:-}" ]; then
            echo "$FLASHGEN_MODEL_SHA256  $tmp" | sha256sum -c - >&2 || { rm -f "$tmp"; exit 1; }
        fi
        mv "$tmp" "$model"
    else
        echo "flashgen-entrypoint: model $model not found." >&2
        echo "  Mount a directory holding it:   docker run -v /path/to/models:/models ..." >&2
        echo "  or let the container fetch it:  -e FLASHGEN_MODEL_URL=https://..." >&2
        exit 1
    fi
fi

exec /usr/local/bin/flashgen serve "$@"
