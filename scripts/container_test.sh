#!/usr/bin/env bash
# `make test-container`: build the Dockerfile with podman, offline, on a Debian bookworm base bootstrapped here
# (no image registry needed); run it; send one embedding request; check the energy headers, /metrics and the
# request's energy record; check the image also runs Locust. Prints how long each phase took.
#
# Cached between runs: the base image (podman image), the wheelhouse ($WATTSERVE_WHEELHOUSE), podman's layers.
# Installs podman, buildah, runc, debootstrap and curl with apt-get when missing (root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${WATTSERVE_BASE_IMAGE:-localhost/wattserve-base:bookworm-py311}
IMAGE=${WATTSERVE_TEST_IMAGE:-localhost/wattserve:test}
WHEELHOUSE=${WATTSERVE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/wattserve/wheelhouse}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
# bounds: the whole run (cold: ~9 min measured on 2 busy cores) and the server's start-up (~12-20 s measured)
TIMEOUT_S=${CONTAINER_TEST_TIMEOUT_S:-1800}
READY_TIMEOUT_S=${CONTAINER_READY_TIMEOUT_S:-180}
MODEL=all-MiniLM-L6-v2
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
NAME=wattserve-test-$$
# podman here: crun fails to start containers and the default ulimits are refused, hence runc and these limits
RUN_FLAGS=(--runtime "$(command -v runc || echo /usr/sbin/runc)" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
WORK=$(mktemp -d)
TIMINGS=()
PASSED=0

say() { printf '[container-test %4ds] %s\n' "$SECONDS" "$*"; }
fail() { say "FAIL: $*"; exit 1; }
# expect WHAT COMMAND...: one check, counted, or the run fails naming WHAT
expect() {
    local what=$1
    shift
    if "$@"; then PASSED=$((PASSED + 1)); else fail "$what"; fi
}
# seconds left of CONTAINER_TEST_TIMEOUT_S, for `timeout` (1 once none are left: the command then times out)
remaining() {
    local left=$((TIMEOUT_S - SECONDS))
    echo $((left > 0 ? left : 1))
}
# phase NAME COMMAND...: runs COMMAND and records its wall time
phase() {
    local name=$1 start=$EPOCHREALTIME
    shift
    say "$name ..."
    "$@"
    TIMINGS+=("$(awk -v n="$name" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%-10s %7.1f s", n, b - a }')")
}
report() {
    local rc=$?
    if [ -n "${STARTED:-}" ]; then
        if [ "$rc" != 0 ]; then
            say "server log (last 40 lines):"
            podman logs --tail 40 "$NAME" 2>&1 || true
        fi
        podman rm -f -t 10 "$NAME" >/dev/null 2>&1 || true
    fi
    # --one-file-system: a debootstrap cut short can leave /proc mounted in its root
    rm -rf --one-file-system "$WORK"
    printf '%s\n' "phase timings:" "${TIMINGS[@]}" "total      $SECONDS s"
    echo "container: $PASSED passed, $((rc == 0 ? 0 : 1)) failed"
    exit "$rc"
}
trap report EXIT
trap 'exit 130' INT TERM

tools() {
    local missing=() t
    for t in podman buildah runc debootstrap curl; do
        command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
    done
    [ "${#missing[@]}" = 0 ] && return
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian bookworm minbase + python3 (3.11) and its venv module: what the Dockerfile needs of a base image.
base_image() {
    if podman image exists "$BASE_IMAGE"; then say "reusing $BASE_IMAGE"; return; fi
    local rootfs=$WORK/rootfs
    timeout "$(remaining)" debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
        "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# Wheels for the image's Python (CPython 3.11, glibc 2.36: bookworm), whatever Python this host has.
# torch is the +cpu build: here pip's own configuration finds it (find-links); elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
wheelhouse() {
    "$PYTHON" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > "$WORK/requirements.txt"
    # pip expands no manylinux tag to older ones: name every glibc from bookworm's 2.36 down
    local target=(--only-binary=:all: --python-version 3.11) arch glibc
    arch=$(uname -m)
    for glibc in $(seq 36 -1 5); do target+=(--platform "manylinux_2_${glibc}_$arch"); done
    target+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
    local wanted=("torch==${TORCH_VERSION}+cpu" "setuptools>=68" -r "$WORK/requirements.txt")
    mkdir -p "$WHEELHOUSE"
    local stamp
    # a marker per request set, so an unchanged one skips even the offline resolution (~12 s)
    stamp="$WHEELHOUSE/.complete-$(printf '%s\n' "${target[@]}" "${wanted[@]:0:2}" | cat - "$WORK/requirements.txt" \
        | sha256sum | cut -c1-16)"
    if [ -e "$stamp" ]; then say "reusing $WHEELHOUSE ($(du -sh "$WHEELHOUSE" | cut -f1))"; return; fi
    # complete already? resolve from the wheelhouse alone, ignoring this host's pip configuration
    if env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PYTHON" -m pip download -q --no-index --find-links "$WHEELHOUSE" -d "$WHEELHOUSE" "${target[@]}" \
        "${wanted[@]}" > "$WORK/pip.log" 2>&1; then
        touch "$stamp"
        say "reusing $WHEELHOUSE ($(du -sh "$WHEELHOUSE" | cut -f1))"
        return
    fi
    timeout "$(remaining)" "$PYTHON" -m pip download -q -d "$WHEELHOUSE" "${target[@]}" "${wanted[@]}" \
        > "$WORK/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/pip.log" | tail -20; fail "pip download"; }
    touch "$stamp"
    say "wheelhouse $WHEELHOUSE: $(du -sh "$WHEELHOUSE" | cut -f1)"
}

build() {
    local old
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    # --network none: proves the build needs no index; --format docker keeps the HEALTHCHECK (OCI has none)
    timeout "$(remaining)" podman build --format docker --layers --pull=never --network none \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-context wheelhouse="$WHEELHOUSE" --build-arg WHEELHOUSE=/wheelhouse \
        -t "$IMAGE" . > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build"; }
    PASSED=$((PASSED + 1))
    say "$(grep -c -- '--> Using cache' "$WORK/build.log" || true) of $(grep -c 'STEP [0-9]*/[0-9]*:' "$WORK/build.log") steps from cache"
    local new
    new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    # the previous test image only: other images on this machine are not ours to prune
    if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
    say "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

start() {
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    STARTED=1
    # stderr to a file: without systemd, podman logs an error about the healthcheck timer it cannot add
    podman run -d --name "$NAME" "${RUN_FLAGS[@]}" -p "127.0.0.1:$PORT:8000" "$IMAGE" >/dev/null 2>"$WORK/run.log" \
        || { cat "$WORK/run.log"; fail "podman run"; }
    URL=http://127.0.0.1:$PORT
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until curl -fsS --max-time 5 -o /dev/null "$URL/readyz" 2>/dev/null; do
        [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] || fail "the container exited"
        [ "$SECONDS" -lt "$deadline" ] || fail "/readyz not 200 within ${READY_TIMEOUT_S}s"
        sleep 1
    done
    PASSED=$((PASSED + 1))
    say "ready on $URL"
}

header() { tr -d '\r' < "$WORK/headers" | awk -v k="$1" 'BEGIN { FS = ": " } tolower($1) == tolower(k) { print $2 }'; }

# one sample whose metric name is $1 and whose labels contain $2, with a value > 0
has_positive_sample() {
    awk -v name="$1" -v label="$2" 'index($0, name "{") == 1 && index($0, label) && $NF + 0 > 0 { found = 1 }
                                    END { exit !found }' "$WORK/metrics"
}

check() {
    local code
    code=$(curl -sS --max-time 60 -D "$WORK/headers" -o "$WORK/body" -w '%{http_code}' \
        -H 'content-type: application/json' -d "{\"model\": \"$MODEL\", \"input\": \"hello\"}" "$URL/v1/embeddings")
    expect "POST /v1/embeddings: HTTP $code: $(head -c 500 "$WORK/body")" [ "$code" = 200 ]
    local joules method rid
    joules=$(header x-energy-joules) method=$(header x-energy-method) rid=$(header x-request-id)
    say "X-Energy-Joules=$joules X-Energy-Method=$method X-Request-Id=$rid"
    expect "X-Energy-Joules is not > 0: '$joules'" awk -v j="$joules" 'BEGIN { exit !(j + 0 > 0) }'
    expect "X-Energy-Method: '$method'" grep -qxE 'measured|estimated|mixed' <<< "$method"
    expect "no X-Request-Id" [ -n "$rid" ]

    curl -fsS --max-time 30 -o "$WORK/metrics" "$URL/metrics" || fail "GET /metrics"
    expect "/metrics: no wattserve_device_energy_joules_total sample > 0" \
        has_positive_sample wattserve_device_energy_joules_total ''
    expect "/metrics: no wattserve_requests_total{model=\"$MODEL\"} > 0" \
        has_positive_sample wattserve_requests_total "model=\"$MODEL\""

    curl -fsS --max-time 30 -o "$WORK/record" "$URL/v1/requests/$rid/energy" || fail "GET /v1/requests/$rid/energy"
    expect "energy record: $(head -c 500 "$WORK/record")" grep -q "\"request_id\": *\"$rid\"" "$WORK/record"
    say "energy record: $(head -c 200 "$WORK/record")..."

    # the image's HEALTHCHECK command, run once by hand (podman's timer needs systemd)
    expect "the image's HEALTHCHECK reports unhealthy" healthy
}
healthy() { podman healthcheck run "$NAME" >/dev/null 2>&1; }

# the same image as a Locust master or worker: each locustfile loads (imports loadtest, lists its users)
locust_check() {
    podman run --rm "${RUN_FLAGS[@]}" --no-healthcheck "$IMAGE" sh -c \
        'set -e; locust --version; for f in loadtest/locustfile*.py; do [ -e "$f" ] || continue;
         users=$(locust -f "$f" --list 2>&1) || { echo "$users"; exit 1; };
         echo "$f: $(echo "$users" | sed -n "/^Available Users/,\$p" | tail -n +2 | xargs)"; done' \
        > "$WORK/locust.log" 2>&1 || { cat "$WORK/locust.log"; fail "locust in the image"; }
    PASSED=$((PASSED + 1))
    sed 's/^/    /' "$WORK/locust.log"
}

phase tools tools
phase base base_image
phase wheels wheelhouse
phase build build
phase start start
phase request check
stop() { podman rm -f -t 10 "$NAME" >/dev/null 2>&1; STARTED=; }
phase stop stop
phase locust locust_check
