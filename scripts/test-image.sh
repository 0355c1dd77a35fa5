#!/usr/bin/env bash
# The image, built and run for real (CI runs it after the test suite: .ci/run). With podman,
# so it works on machines without a Docker engine:
#   1. installs podman, buildah, runc and debootstrap from apt when missing;
#   2. the base image: python:3.11-slim-bookworm when a registry can be reached, else a
#      Debian bookworm minbase with Debian's Python 3.11 made by debootstrap from the apt
#      mirror this machine uses (cached as a tarball, rebuilt weekly: security updates);
#   3. builds the slim image (Dockerfile, target serve) with --format docker (OCI drops
#      HEALTHCHECK and SHELL), this machine's pip settings and CA bundle mounted for the
#      build only, and checks its size;
#   4. runs it as an arbitrary uid (123456, group 0), read-only with a tmpfs on /tmp, on
#      free loopback ports; waits for READINESS (the image's HEALTHCHECK: every model has a
#      READY worker); sends a real photo to a fast style and checks a painted PNG of the
#      photo's size comes back; stops it with SIGTERM and checks it exits cleanly;
#   5. the same for the KServe predictor (target kserve) with a v2 request (--no-kserve skips it).
# Everything it makes (containers, images, build layers) lives in a private podman storage
# under a temporary folder and is removed at exit; only the base tarball is kept, in
# $IMAGE_TEST_CACHE (/var/cache/style-transfer-image). On failure it prints the container's
# log and exits non-zero.
#   scripts/test-image.sh [--no-kserve] [--keep]     (--keep: leave the images for a look)
# Environment: IMAGE_TEST_SKIP=1 skips it all; IMAGE_TEST_BASE names a base image (a registry
# reference, pulled) to use instead of the two above; IMAGE_TEST_CACHE moves the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

kserve=1 keep=""
for arg in "$@"; do
  case "$arg" in
    --no-kserve) kserve="" ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--no-kserve] [--keep]" >&2; exit 2 ;;
  esac
done
if [ -n "${IMAGE_TEST_SKIP:-}" ]; then
  echo "[image] IMAGE_TEST_SKIP is set: image build and smoke test skipped"
  exit 0
fi

started=$SECONDS
log() { echo "[image $(printf '%4d' $((SECONDS - started)))s] $*"; }
fail() { echo "[image] FAILED: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then  # rootful podman and debootstrap
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
    || fail "needs root (or passwordless sudo) for podman and debootstrap"
  exec sudo -n --preserve-env=IMAGE_TEST_BASE,IMAGE_TEST_CACHE,TMPDIR "$0" "$@"
fi

CACHE=${IMAGE_TEST_CACHE:-/var/cache/style-transfer-image}
PHOTO=../shared/images/content/face.jpg
STYLE=udnie                 # the fast style the request goes to
MAX_SERVE_BYTES=$((2500 * 1000 * 1000))
CLIENT=.venv/bin/python     # has Pillow (scripts/install.sh)
READY_TIMEOUT=240

ls model_store/*.mar >/dev/null 2>&1 || fail "no archives in model_store/: run scripts/build.sh first"
[ -x "$CLIENT" ] || fail "$CLIENT missing: run scripts/install.sh first"
[ -f "$PHOTO" ] || PHOTO=$($CLIENT -c 'from core.photos import default_parity_photo; print(default_parity_photo())')

# ---- 1. tools --------------------------------------------------------------------------------
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq podman buildah runc debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq podman buildah runc debootstrap >/dev/null; }
fi

# ---- private podman storage and settings, removed at exit -------------------------------------
# Its own storage: nothing here touches other podman users' images or containers.
work=$(mktemp -d "${TMPDIR:-/var/tmp}/style-image.XXXXXX")
podman() {  # without its complaints that there is no systemd for healthcheck timers (run by hand here)
  command podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay "$@" \
    2> >(grep -v "unable to get systemd connection" >&2)
}
containers=()
cleanup() {
  local status=$?
  set +e
  for id in "${containers[@]}"; do podman rm -f -t 5 "$id" >/dev/null 2>&1; done
  if [ -z "$keep" ]; then
    podman rmi -a -f >/dev/null 2>&1
    grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
  else
    echo "[image] --keep: images left in $work (podman --root $work/storage --runroot $work/run images)"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# crun refuses hybrid cgroup hosts: runc. nofile: Java and TorchServe's workers need more
# than the 1024 some hosts default to.
cat > "$work/containers.conf" <<'EOF'
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
export CONTAINERS_CONF=$work/containers.conf

# ---- 2. base image ----------------------------------------------------------------------------
apt_mirror() {  # the Debian mirror apt uses here (deb822 or one-line sources), else Debian's CDN
  local kind=$1 found
  found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | grep -oE "https?://[^ ]+/${kind}/?( |$)" | head -n1 | tr -d ' ' || true)
  echo "${found:-http://deb.debian.org/${kind}}"
}

base=""
if [ -n "${IMAGE_TEST_BASE:-}" ]; then
  base=$IMAGE_TEST_BASE
  podman pull -q "$base" >/dev/null
  log "base: $base (IMAGE_TEST_BASE)"
elif timeout 120 podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
  base=docker.io/library/python:3.11-slim-bookworm
  log "base: $base (pulled)"
else
  mirror=$(apt_mirror debian) security=$(apt_mirror debian-security)
  packages="python3.11 python3.11-venv python-is-python3 ca-certificates"
  recipe="bookworm minbase $packages $mirror $security v1"
  tarball="$CACHE/python3.11-bookworm-$(echo "$recipe" | sha256sum | cut -c1-12).tar"
  if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7 2>/dev/null)" ]; then
    log "base: no registry; debootstrap bookworm minbase + Debian's Python 3.11 from $mirror"
    mkdir -p "$CACHE"
    root="$work/rootfs"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap"; }
    # The suites the official image has (security updates included): updates, then Python.
    cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get upgrade -y -qq \
      && apt-get install -y -qq --no-install-recommends $packages" \
      >"$work/packages.log" 2>&1 || { tail -n 30 "$work/packages.log" >&2; fail "base packages"; }
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*
    : > "$root/etc/resolv.conf"
    tar -C "$root" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
    find "$CACHE" -maxdepth 1 -name 'python3.11-bookworm-*.tar' ! -path "$tarball" -delete
  fi
  base=localhost/style-transfer-python:3.11-bookworm
  podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$base" >/dev/null
  log "base: $base (debootstrap, cached at $tarball)"
fi

# ---- 3. build -----------------------------------------------------------------------------------
# pip inside the build uses this machine's package index and CA bundle (a proxy here may
# re-sign TLS), mounted read-only for the build only as root's home, which every base image
# has (a mount point the image lacks would be left behind in a layer as an empty file).
pip_settings() {
  mkdir -p "$work/build-home/.config/pip"
  "$CLIENT" - "$work/build-home/.config/pip/pip.conf" <<'EOF'
import os, subprocess, sys
# The settings pip runs with here (files and PIP_* variables), keeping what works inside a
# build: index URLs over the network, timeouts, trusted hosts; never local paths.
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
keep = {"index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries", "proxy"}
settings = {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    name = key.split(".", 1)[-1]
    if name in keep:
        values = [v for v in value.strip().strip("'\"").split() if not v.startswith("file:") and not v.startswith("/")]
        if values:
            settings[name] = " ".join(values)
settings["cert"] = "/root/.config/pip/ca-certificates.crt"
with open(sys.argv[1], "w") as f:
    f.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
EOF
}
pip_settings
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
[ -f "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
cp "$cert" "$work/build-home/.config/pip/ca-certificates.crt"
built_bytes=0
build() {  # build TARGET TAG: sets built_bytes
  local target=$1 tag=$2 t0=$SECONDS
  log "building target $target"
  podman build --format docker --target "$target" --tag "$tag" --build-arg PYTHON_IMAGE="$base" \
    --volume "$work/build-home:/root:ro" \
    --file Dockerfile . >"$work/build-$target.log" 2>&1 \
    || { tail -n 60 "$work/build-$target.log" >&2; fail "podman build --target $target (log above)"; }
  built_bytes=$(podman image inspect --format '{{.Size}}' "$tag")
  log "built $tag in $((SECONDS - t0))s: $((built_bytes / 1000000)) MB"
  # Independent of the build's own checks: the image as shipped has no torch and no CUDA.
  { podman run --rm --no-healthcheck --entrypoint python "$tag" /app/docker/build_checks.py no-torch /opt/venv \
      && podman run --rm --no-healthcheck --entrypoint python "$tag" /app/docker/build_checks.py no-cuda /opt/venv; } >/dev/null \
    || fail "$tag carries torch or CUDA"
  [ "$(podman image inspect --format '{{json .Config.Healthcheck}}' "$tag")" != null ] \
    || fail "$tag has no HEALTHCHECK (built without --format docker?)"
}
serve_image=localhost/style-transfer:ci-$$
build serve "$serve_image"
serve_bytes=$built_bytes
[ "$serve_bytes" -le "$MAX_SERVE_BYTES" ] || fail "the serve image is $((serve_bytes / 1000000)) MB, over 2500 MB"

# ---- 4./5. run, wait for readiness, request, stop ----------------------------------------------
dump() {  # the container's log and health, on failure
  echo "----- container log ($1), access log left out -----" >&2
  podman logs "$1" 2>&1 | grep -v ACCESS_LOG | tail -n 200 >&2 || true
  echo "----- healthcheck: $(podman exec "$1" python /app/docker/healthcheck.py "${@:2}" 2>&1 || true)" >&2
}
run() { podman run --health-interval disable "$@"; }  # no healthcheck timer: wait_ready runs it
waited=0
wait_ready() {  # wait_ready ID [healthcheck args]: polls the image's own HEALTHCHECK; sets waited
  local id=$1 t0=$SECONDS
  while [ $((SECONDS - t0)) -lt $READY_TIMEOUT ]; do
    [ "$(podman inspect --format '{{.State.Running}}' "$id")" = true ] || { dump "$id" "${@:2}"; fail "container exited"; }
    # A worker dying while its model loads is a broken image or archive: no point waiting.
    if podman logs "$id" 2>&1 | grep -q "Backend worker process died"; then
      sleep 2; dump "$id" "${@:2}"; fail "a TorchServe worker died while loading its model (log above)"
    fi
    if podman healthcheck run "$id" >/dev/null 2>&1; then
      waited=$((SECONDS - t0))
      return 0
    fi
    sleep 1
  done
  dump "$id" "${@:2}"
  fail "not ready after ${READY_TIMEOUT}s"
}
stop_clean() {  # stop_clean ID: SIGTERM, then the exit code must be 0
  local id=$1 t0=$SECONDS code
  podman stop -t 40 "$id" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$id")
  [ "$code" = 0 ] || { dump "$id"; fail "exit code $code after SIGTERM"; }
  log "stopped by SIGTERM in $((SECONDS - t0))s, exit code 0"
}

read -r http metrics kserve_port <<< "$("$CLIENT" scripts/image_check.py free-ports 3 | tr '\n' ' ')"
# An arbitrary uid in group 0 (OpenShift), read-only root, a tmpfs for /tmp: the strictest way
# the image is meant to run. Every model of the image (STYLE_MODELS=all).
t0=$SECONDS
id=$(run -d --name "style-ci-serve-$$" --user 123456:0 --read-only --tmpfs /tmp:rw,size=2g,mode=1777 \
       -p "127.0.0.1:$http:8080" -p "127.0.0.1:$metrics:8082" "$serve_image")
containers+=("$id")
wait_ready "$id"
models=$(podman exec "$id" sh -c 'ls /home/model-server/model-store/*.mar | wc -l')
log "serve: ready ${waited}s after start (HEALTHCHECK: all $models models have a READY worker)"
podman exec "$id" cat /tmp/model-server/key_file.json > "$work/key_file.json"
"$CLIENT" scripts/image_check.py torchserve "http://127.0.0.1:$http" "$work/key_file.json" "$PHOTO" "$STYLE" \
  || { dump "$id"; fail "request to /predictions/$STYLE"; }
"$CLIENT" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10).read()' \
  "http://127.0.0.1:$metrics/metrics" || { dump "$id"; fail "/metrics"; }
podman healthcheck run "$id" >/dev/null || { dump "$id"; fail "HEALTHCHECK after the request"; }
podman exec "$id" python /app/docker/healthcheck.py --live >/dev/null || { dump "$id" --live; fail "liveness"; }
if podman logs "$id" 2>&1 | grep -E "Matplotlib is building|is not a writable|PermissionError|allow write access|Failed to persist" >&2
then
  fail "warnings about unwritable folders in the log (above)"
fi
memory=$(podman stats --no-stream --format '{{.MemUsage}}' "$id" 2>/dev/null | cut -d/ -f1 || true)
log "serve: memory in use ${memory:-?}"
stop_clean "$id"
log "serve image: $((serve_bytes / 1000000)) MB, ready in ${waited}s (start to every model READY)"

if [ -n "$kserve" ]; then
  kserve_image=localhost/style-transfer:ci-kserve-$$
  build kserve "$kserve_image"
  id=$(run -d --name "style-ci-kserve-$$" --user 123456:0 --read-only --tmpfs /tmp:rw,size=2g,mode=1777 \
         -e STYLE_MODELS="$STYLE" -p "127.0.0.1:$kserve_port:8080" "$kserve_image")
  containers+=("$id")
  wait_ready "$id" --kserve
  log "kserve: ready ${waited}s after start"
  "$CLIENT" scripts/image_check.py kserve "http://127.0.0.1:$kserve_port" "$PHOTO" "$STYLE" \
    || { dump "$id" --kserve; fail "v2 request to $STYLE"; }
  stop_clean "$id"
fi
log "image checks passed in $((SECONDS - started))s"
