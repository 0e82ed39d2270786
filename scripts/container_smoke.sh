#!/usr/bin/env bash
# Container smoke test for the CPU image: build Dockerfile.cpu, run it with an API key, wait for /ready, call
# /predict with and without the key, check the process is not root and torch is absent, report the image size over
# the base image, stop it with SIGTERM and check it exits cleanly. The container is always removed.
#
# Usage: scripts/container_smoke.sh            (from anywhere; works on the repository it lives in)
#
# Engine: `docker` when an engine answers `docker info`, else `podman`. On the sandboxed build machines (no Docker
# engine, no registry) ../shared/containers/ provides make-base-image.sh (a local python:3.11-slim stand-in, and
# podman itself) and podman-run.sh (the run flags that sandbox needs); both are used when present.
#
# Exit status: 0 passed, 1 failed, 77 skipped (no usable container engine; the reason is printed).
#
# Environment (all optional):
#   SMOKE_ENGINE         docker | podman (default: auto-detect)
#   SMOKE_IMAGE          tag to build (default: localhost/neuraltrade-edge:cpu)
#   SMOKE_BASE_IMAGE     base image, passed as BASE_IMAGE (default: python:3.11-slim)
#   SMOKE_PORT           host port (default: a free one)
#   SMOKE_READY_TIMEOUT  seconds to wait for /ready (default: 90)
#   SMOKE_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL on stop (default: 30)
#   SMOKE_MAX_ADDED_MB   fail when the image adds more than this over the base, in MB of 10^6 bytes (default: 150;
#                        0 disables the check)
#   SMOKE_SKIP_BUILD     1 to reuse an existing SMOKE_IMAGE
#   SMOKE_CONTEXT        build context (default: the repository; it must hold .dockerignore, pyproject.toml,
#                        runtime/ and models/)
#   SMOKE_SHARED         folder with make-base-image.sh and podman-run.sh (default: <repo>/../shared/containers)
#   SMOKE_PYTHON         host python for the HTTP calls (default: python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SMOKE_SHARED:-$repo/../shared/containers}"
context="${SMOKE_CONTEXT:-$repo}"
image="${SMOKE_IMAGE:-localhost/neuraltrade-edge:cpu}"
base_image="${SMOKE_BASE_IMAGE:-python:3.11-slim}"
ready_timeout="${SMOKE_READY_TIMEOUT:-90}"
stop_timeout="${SMOKE_STOP_TIMEOUT:-30}"
max_added_mb="${SMOKE_MAX_ADDED_MB:-150}"
py="${SMOKE_PYTHON:-python3}"
name="neuraltrade-edge-smoke-$$"
payload="${TMPDIR:-/tmp}/$name.json"
api_key="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

log() { printf 'smoke: %s\n' "$*"; }
fail() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'smoke: SKIP: %s\n' "$*" >&2; exit 77; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---- engine -------------------------------------------------------------------------------------------------------
engine="${SMOKE_ENGINE:-}"
if [[ -z "$engine" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null || [[ -f "$shared/make-base-image.sh" ]]; then
    engine=podman
  else
    skip "no container engine: docker is $(command -v docker >/dev/null && echo 'installed but no engine answers' || echo 'not installed'), podman is not installed"
  fi
fi

if [[ "$engine" == podman ]]; then
  if [[ -f "$shared/make-base-image.sh" && "$base_image" == python:3.11-slim ]]; then
    # Installs podman when missing and creates the local python:3.11-slim stand-in; a no-op once it exists.
    if ! bash "$shared/make-base-image.sh" >/dev/null; then
      skip "podman: $shared/make-base-image.sh failed (cannot install podman or build the base image)"
    fi
  fi
  command -v podman >/dev/null || skip "podman is not installed"
  if [[ -f "$shared/podman-run.sh" ]]; then
    # Sandbox: cgroup v1 via cgroupfs, runc, host network (the container's port is the host's), lowered rlimits.
    ctr=(podman --cgroup-manager=cgroupfs)
    run=(bash "$shared/podman-run.sh")
    host_network=1
  else
    ctr=(podman)
    run=(podman run)
    host_network=0
  fi
  # --isolation=chroot keeps RUN steps off the OCI runtime; --format docker keeps HEALTHCHECK (OCI drops it).
  build=(podman build --isolation=chroot --network host --format docker)
  # Without systemd, podman cannot schedule healthcheck timers; the smoke test runs the healthcheck by hand.
  run+=(--no-healthcheck)
  "${ctr[@]}" info >/dev/null 2>&1 || skip "podman is installed but 'podman info' fails"
elif [[ "$engine" == docker ]]; then
  ctr=(docker)
  run=(docker run)
  build=(docker build)
  host_network=0
else
  fail "SMOKE_ENGINE must be docker or podman, got '$engine'"
fi
log "engine: $engine"

# ---- cleanup ------------------------------------------------------------------------------------------------------
cleanup() {
  local rc=$?
  rm -f "$payload" "$payload.v2" "${TMPDIR:-/tmp}/$name.drain"
  if "${ctr[@]}" container exists "$name" >/dev/null 2>&1 || "${ctr[@]}" inspect "$name" >/dev/null 2>&1; then
    if [[ $rc -ne 0 ]]; then
      log "container logs (last 60 lines):"
      "${ctr[@]}" logs --tail 60 "$name" 2>&1 | sed 's/^/    /' >&2 || true
    fi
    "${ctr[@]}" rm -f "$name" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build --------------------------------------------------------------------------------------------------------
if [[ "${SMOKE_SKIP_BUILD:-0}" != 1 ]]; then
  log "building $image from Dockerfile.cpu (BASE_IMAGE=$base_image)"
  t0=$(now)
  "${build[@]}" -f "$repo/Dockerfile.cpu" -t "$image" \
    --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "VCS_REF=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$context" >"${TMPDIR:-/tmp}/$name.build.log" 2>&1 || { tail -40 "${TMPDIR:-/tmp}/$name.build.log" >&2; fail "build failed"; }
  log "build time: $(elapsed "$t0" "$(now)") s"
  rm -f "${TMPDIR:-/tmp}/$name.build.log"
fi

# ---- size ---------------------------------------------------------------------------------------------------------
size=$("${ctr[@]}" image inspect "$image" --format '{{.Size}}')
base_size=$("${ctr[@]}" image inspect "$base_image" --format '{{.Size}}' 2>/dev/null || echo 0)
added_mb=$(awk -v a="$size" -v b="$base_size" 'BEGIN { printf "%.1f", (a - b) / 1e6 }')
log "image size: $(awk -v a="$size" 'BEGIN { printf "%.1f", a / 1e6 }') MB, base: $(awk -v b="$base_size" 'BEGIN { printf "%.1f", b / 1e6 }') MB, added: $added_mb MB"
if [[ "$base_size" != 0 && "$max_added_mb" != 0 ]] && awk -v a="$added_mb" -v m="$max_added_mb" 'BEGIN { exit !(a > m) }'; then
  fail "image adds $added_mb MB over the base, more than $max_added_mb MB"
fi

# ---- run ----------------------------------------------------------------------------------------------------------
port="${SMOKE_PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if [[ "$host_network" == 1 ]]; then
  publish=(-e "EDGE_PORT=$port")
else
  publish=(-p "127.0.0.1:$port:8000")
fi
url="http://127.0.0.1:$port"

t_start=$(now)
# The same confinement as deploy/k8s/deployment.yaml: read-only root filesystem, no capabilities, no privilege gain.
"${run[@]}" -d --name "$name" "${publish[@]}" --read-only --cap-drop ALL --security-opt no-new-privileges \
  -e "EDGE_API_KEYS=$api_key" -e EDGE_LOG_LEVEL=info "$image" >/dev/null
log "started $name on $url"

# http METHOD PATH [API_KEY] [BODY_FILE] -> prints "STATUS BODY"; status 000 when the connection fails.
http() {
  "$py" - "$@" <<'PY'
import sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
key = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
data = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else None
req = urllib.request.Request(url, data=data, method=method)
if data is not None:
    req.add_header("Content-Type", "application/json")
if key:
    req.add_header("X-API-Key", key)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode(errors="replace")[:500])
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode(errors="replace")[:500])
except Exception as e:  # connection refused/reset while starting or stopping
    print("000", type(e).__name__)
PY
}

deadline=$(awk -v t="$t_start" -v d="$ready_timeout" 'BEGIN { printf "%.0f", t + d }')
while :; do
  state=$("${ctr[@]}" inspect "$name" --format '{{.State.Status}}' 2>/dev/null || echo gone)
  [[ "$state" == running || "$state" == created ]] || fail "container is '$state' before becoming ready"
  read -r code _ <<<"$(http GET "$url/ready")"
  [[ "$code" == 200 ]] && break
  (( $(date +%s) < deadline )) || fail "/ready not 200 within ${ready_timeout}s (last status $code)"
  sleep 0.2
done
log "start to ready: $(elapsed "$t_start" "$(now)") s"

read -r code body <<<"$(http GET "$url/health")"
[[ "$code" == 200 ]] || fail "/health: expected 200, got $code $body"

# ---- predict ------------------------------------------------------------------------------------------------------
"$py" - "$payload" <<'PY'
import json, math, sys
from datetime import datetime, timedelta, timezone
t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
candles, price = [], 42000.0
for i in range(60):
    o = price
    c = o * (1 + 0.002 * math.sin(i / 5))
    candles.append({
        "timestamp": (t0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "open": round(o, 2), "high": round(max(o, c) * 1.001, 2), "low": round(min(o, c) * 0.999, 2),
        "close": round(c, 2), "volume": round(10 + 3 * math.cos(i / 7), 3),
    })
    price = c
json.dump({"symbol": "BTC/USDT", "exchange": "binance", "sequence": candles}, open(sys.argv[1], "w"))
# The same window as an Open Inference Protocol (v2) request: FP32 [1, 60, 5], features in runtime order.
data = [c[f] for c in candles for f in ("open", "high", "low", "close", "volume")]
tensor = {"name": "ohlcv_sequence", "datatype": "FP32", "shape": [1, 60, 5], "data": data}
json.dump({"inputs": [tensor]}, open(sys.argv[1] + ".v2", "w"))
PY

read -r code body <<<"$(http POST "$url/predict" "$api_key" "$payload")"
[[ "$code" == 200 ]] || fail "/predict with key: expected 200, got $code $body"
[[ "$body" == *'"prediction"'* ]] || fail "/predict with key: no \"prediction\" in $body"
log "/predict with key: 200 $body"

read -r code body <<<"$(http POST "$url/predict" "" "$payload")"
[[ "$code" == 401 ]] || fail "/predict without key: expected 401, got $code $body"
read -r code body <<<"$(http POST "$url/predict" "wrong-$api_key" "$payload")"
[[ "$code" == 401 ]] || fail "/predict with a wrong key: expected 401, got $code $body"
log "/predict without key / wrong key: 401"

# The v2 (KServe) data plane, once the runtime serves it: same key, same model.
read -r code body <<<"$(http POST "$url/v2/models/signal_predictor/infer" "$api_key" "$payload.v2")"
if [[ "$code" == 404 ]]; then
  log "v2 infer: not served by this runtime (404), skipped"
else
  [[ "$code" == 200 && "$body" == *'"outputs"'* ]] || fail "v2 infer with key: expected 200 with outputs, got $code $body"
  read -r code _ <<<"$(http POST "$url/v2/models/signal_predictor/infer" "" "$payload.v2")"
  [[ "$code" == 401 ]] || fail "v2 infer without key: expected 401, got $code"
  read -r code _ <<<"$(http GET "$url/v2/health/ready")"
  [[ "$code" == 200 ]] || fail "/v2/health/ready (the KServe readiness probe, no key): expected 200, got $code"
  log "v2 infer: 200 with key, 401 without; /v2/health/ready: 200"
fi

# ---- inside the container -----------------------------------------------------------------------------------------
uid=$("${ctr[@]}" exec "$name" id -u)
[[ "$uid" != 0 ]] || fail "the service runs as root"
log "uid inside: $uid"
if "${ctr[@]}" exec "$name" python -c 'import torch' >/dev/null 2>&1; then fail "torch is importable in the image"; fi
if "${ctr[@]}" exec "$name" python -c 'import training' >/dev/null 2>&1; then fail "training/ is importable in the image"; fi
if "${ctr[@]}" exec "$name" python -m pip --version >/dev/null 2>&1; then fail "pip is present in the image's venv"; fi
log "torch, training and pip: absent"
# The image's HEALTHCHECK command, run by hand (podman cannot schedule it without systemd here).
if [[ "$engine" == podman ]]; then hc_field=.HealthCheck; else hc_field=.Config.Healthcheck; fi
hc=$("${ctr[@]}" image inspect "$image" --format "{{json $hc_field}}" 2>/dev/null || echo null)
if [[ "$hc" == null || -z "$hc" ]]; then fail "the image has no HEALTHCHECK (build with --format docker under podman)"; fi
"${ctr[@]}" exec "$name" python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EDGE_PORT', '8000'), timeout=4)" \
  || fail "the HEALTHCHECK command fails inside the container"
log "healthcheck command: ok"

# ---- SIGTERM ------------------------------------------------------------------------------------------------------
# `stop` sends the image's STOPSIGNAL (SIGTERM), then SIGKILL after the timeout (exit code 137). Clients keep calling
# /predict and /ready while it drains: a request the server accepted must get a real answer (200, or 503 once it is
# draining), never a 500. Refused or reset connections are counted, not failed: in Kubernetes the preStop sleep
# takes the pod out of the Service before SIGTERM, so no new connections arrive then.
drain_report="${TMPDIR:-/tmp}/$name.drain"
"$py" - "$url" "$api_key" "$payload" "$((stop_timeout + 5))" >"$drain_report" <<'PY' &
import json, sys, threading, time, urllib.error, urllib.request
url, key, payload, limit = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read(), float(sys.argv[4])
counts, lock, stop_at = {}, threading.Lock(), time.monotonic() + limit
def note(k):
    with lock:
        counts[k] = counts.get(k, 0) + 1
def client(path):
    refused = 0
    while time.monotonic() < stop_at and refused < 5:
        req = urllib.request.Request(url + path, data=payload if path == "/predict" else None,
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                note(f"{path} {r.status}")
        except urllib.error.HTTPError as e:
            note(f"{path} {e.code}")
        except (ConnectionRefusedError, urllib.error.URLError) as e:
            reason = getattr(e, "reason", e)
            is_refused = isinstance(reason, ConnectionRefusedError)
            refused += is_refused
            note(f"{path} {'refused' if is_refused else type(reason).__name__}")
            time.sleep(0.05)
        except Exception as e:  # reset or closed mid-request
            note(f"{path} {type(e).__name__}")
threads = [threading.Thread(target=client, args=(p,)) for p in ["/predict"] * 4 + ["/ready"]]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts, sort_keys=True))
PY
load=$!
sleep 1  # let the clients get going
t_stop=$(now)
"${ctr[@]}" stop -t "$stop_timeout" "$name" >/dev/null || fail "'$engine stop' failed"
stop_s=$(elapsed "$t_stop" "$(now)")
wait "$load" || true
exit_code=$("${ctr[@]}" inspect "$name" --format '{{.State.ExitCode}}')
log "stop (SIGTERM) to exit: $stop_s s, exit code $exit_code"
log "requests around the stop: $(cat "$drain_report")"
[[ "$exit_code" == 0 ]] || fail "the service did not exit cleanly on SIGTERM (exit code $exit_code)"
if grep -Eq '"/predict (5(0[0-24-9]|[1-9][0-9])|4[0-9][0-9])"' "$drain_report"; then
  fail "a request accepted during shutdown got an error answer (see counts above)"
fi
rm -f "$drain_report"

"${ctr[@]}" rm -f "$name" >/dev/null
log "PASS"
