#!/usr/bin/env bash
# gpu_smoke.sh — the CLI and the daemon on the GPU machine, end to end (run there, from the repo
# root, after tools/pack_gpu.sh here; carry .gpu/). Makes a seeded random SmolLM2-shape model
# with transformers (byte-level tokenizer), then:
#   1. `flashgen generate` greedy on --device cuda and --device cpu: prints both id lists;
#   2. `flashgen serve --device cuda`: /health, /info, /generate, /v1/chat/completions, 16
#      concurrent streaming requests (continuous batching on the GPU), /metrics, SIGTERM drain.
set -uo pipefail
G=.gpu
export LD_LIBRARY_PATH="$PWD/$G:${LD_LIBRARY_PATH:-}"
W=${WORK:-/tmp/gsmoke}
mkdir -p "$W"
python3 - "$W" <<'PY'
import json, os, sys
sys.path.insert(0, "tools")
import gpu_engine_check as g
m = g.make_model("smollm2", os.path.join(sys.argv[1], "m"), 1234)
PY
M="$W/m"
fail=0
for dev in cuda cpu; do
    "$G/flashgen" generate --model "$M" --device $dev --prompt "Hello, GPU world" \
        --max-new-tokens 16 --ignore-eos --print-ids >/dev/null 2>"$W/gen_$dev.err" || fail=1
    echo "generate --device $dev: $(grep generated_ids "$W/gen_$dev.err")"
done
"$G/flashgen" serve --model "$M" --device cuda --port 18080 >"$W/serve.log" 2>&1 &
pid=$!
for i in $(seq 120); do
    curl -sf http://127.0.0.1:18080/health >/dev/null && break
    sleep 0.5
done
echo "health: $(curl -s -w ' %{http_code}' http://127.0.0.1:18080/health)"
echo "info: $(curl -s http://127.0.0.1:18080/info)"
echo "generate: $(curl -s http://127.0.0.1:18080/generate -H 'Content-Type: application/json' \
    -d '{"inputs":"Hello, GPU world","parameters":{"max_new_tokens":16,"ignore_eos":true,"details":true}}' |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print([t["id"] for t in d["details"]["tokens"]], d["details"]["finish_reason"])')"
# sampling on the GPU: the same seed twice gives the same tokens; with the penalty and both cuts
samp='{"inputs":"Hello, GPU world","parameters":{"max_new_tokens":16,"ignore_eos":true,"details":true,"do_sample":true,"temperature":0.8,"top_k":40,"top_p":0.9,"repetition_penalty":1.2,"seed":7,"decoder_input_details":true}}'
ids() { curl -s http://127.0.0.1:18080/generate -H 'Content-Type: application/json' -d "$samp" |
    python3 -c 'import json,sys; d=json.load(sys.stdin)["details"]; print([t["id"] for t in d["tokens"]], "prompt logprobs:", [round(t["logprob"], 2) if t["logprob"] is not None else None for t in d["prefill"]][:4])'; }
a=$(ids); b=$(ids)
echo "sampled seed 7: $a"
[ "$a" = "$b" ] && echo "sampled twice, same seed: same tokens" || { echo "sampled twice: DIFFERENT"; fail=1; }
curl -s http://127.0.0.1:18080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}' | head -c 300
echo
for i in $(seq 16); do
    curl -sN http://127.0.0.1:18080/generate_stream -H 'Content-Type: application/json' \
        -d "{\"inputs\":\"request $i says\",\"parameters\":{\"max_new_tokens\":32,\"ignore_eos\":true}}" \
        >"$W/stream_$i.txt" &
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
ok=0
for i in $(seq 16); do grep -q '"generated_text":"' "$W/stream_$i.txt" && ok=$((ok + 1)); done
echo "16 concurrent streams completed: $ok/16"
curl -s http://127.0.0.1:18080/metrics | grep -E "^flashgen_(requests_total|generation_tokens_total|iterations_total|batch)" | head
kill -TERM $pid
wait $pid
echo "serve exit status after SIGTERM: $?"
grep -E "ready|device|error" "$W/serve.log" | head -5
exit $fail
