#!/usr/bin/env bash
# Run the CPU image as Knative would and check the two things a cluster depends on:
#  1. read-only root filesystem, non-root user, no capabilities: /readyz turns 200 and
#     /predict answers a real image;
#  2. a corrupt model file: the container exits non-zero and its last log line says why
#     (Knative shows that line in the Revision's status). A file that differs from its
#     manifest's sha256 is refused before loading (status 2).
# Usage: scripts/check-image.sh [IMAGE]   (needs podman or docker, the image built, and a
# PYTHON with Pillow: make image-check passes the project venv)
set -euo pipefail
IMAGE=${1:-kind.local/densenet-serving-cpu:0.1.0}
ENGINE=$(command -v podman || command -v docker)
PORT=${PORT:-18080}
NAME=densenet-check-$$
variant=$("$ENGINE" image inspect "$IMAGE" --format '{{range .Config.Env}}{{println .}}{{end}}' \
  | sed -n 's/^MODEL_VARIANT=//p')
run=("$ENGINE" run --read-only --user 65532:65532 --cap-drop ALL
     --security-opt no-new-privileges --tmpfs /tmp:size=64m -e DRAIN_SECONDS=0)
trap '"$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true' EXIT

"${run[@]}" -d --name "$NAME" -p "127.0.0.1:$PORT:8080" "$IMAGE" >/dev/null
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/readyz"; echo
"${PYTHON:-python3}" - "$PORT" <<'PY'
import io, json, sys, urllib.request
from PIL import Image
buf = io.BytesIO()
Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(buf, "PNG")
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/predict", data=buf.getvalue(),
                             headers={"Content-Type": "image/png"})
body = json.load(urllib.request.urlopen(req, timeout=30))
print("predict:", body["variant"], body["runtime"], body["predictions"][0])
PY
echo "user: $("$ENGINE" exec "$NAME" id -u), root filesystem writable: $(
  "$ENGINE" exec "$NAME" sh -c 'touch /probe 2>/dev/null && echo yes || echo no')"
"$ENGINE" stop -t 40 "$NAME" >/dev/null
echo "exit status after SIGTERM: $("$ENGINE" inspect "$NAME" --format '{{.State.ExitCode}}')"
"$ENGINE" rm "$NAME" >/dev/null

corrupt=$(mktemp); printf 'not an onnx graph' > "$corrupt"; chmod 644 "$corrupt"
set +e
"${run[@]}" --name "$NAME" -v "$corrupt:/models/$variant/model.onnx:ro" "$IMAGE" > "$corrupt.log" 2>&1
status=$?
set -e
rm -f "$corrupt"
echo "corrupt model.onnx: exit status $status; last line: $(tail -n 1 "$corrupt.log")"
rm -f "$corrupt.log"
[ "$status" -ne 0 ]
