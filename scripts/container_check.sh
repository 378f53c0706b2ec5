#!/usr/bin/env bash
# Manual check of the container image (docs/container.md). Not part of CI (.ci/run): it needs a
# container engine (root for podman on our machines) and takes a minute or more.
#
# Builds the image from the repository's Dockerfile, runs `llmsim --version`, `llmsim validate
# --help`, `llmsim doctor`, the README's main example (writing to a mounted folder, as root and
# as an unprivileged user) and `llmsim validate` on the shipped vLLM run, and compares the
# per-request CSV byte for byte with the same example run on the host (when llmsim is installed
# there). Exits 0 with a summary of the figures, or 1 with one line `container_check: FAIL: ...`.
#
# Environment:
#   LLMSIM_CONTAINER_ENGINE  docker or podman (or a path to either); default: docker when
#                            `docker info` answers, else podman
#   LLMSIM_BASE_IMAGE        passed as --build-arg BASE=... (e.g. local/debian:bookworm on a
#                            machine without registry access); default: the Dockerfile's
#   LLMSIM_EXTRA_APT_PACKAGES passed as --build-arg EXTRA_APT_PACKAGES=... (e.g. libprotobuf32,
#                            which ASTRA-Sim builds link against)
#   LLMSIM_ASTRA_SIM         host path of an ASTRA-Sim binary: its folder is mounted read-only
#                            at /astra and the example also runs with --backend astra-sim (the
#                            fork's AnalyticalAstra must give the embedded backend's CSV)
#   LLMSIM_IMAGE             tag to build and run (default: llmsim)
#   LLMSIM_CONTAINER_NETWORK --network for build and run (default: host; empty: the engine's)
#   LLMSIM_HOST_CMD          host command to compare with (default: llmsim when on PATH;
#                            `none` skips the comparison)
#   LLMSIM_CHECK_DIR         folder for logs and outputs (default: a new temp folder, removed
#                            on success, kept on failure)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${LLMSIM_IMAGE:-llmsim}
BASE=${LLMSIM_BASE_IMAGE:-}
NET=${LLMSIM_CONTAINER_NETWORK-host}
EXAMPLE=(--cluster-config configs/cluster/single_node_pp_instance.json --dtype float16 --block-size 16
         --dataset workloads/example_trace.jsonl --log-interval 1.0)
HEADER='instance id,request id,model,input,output,arrival,end_time,latency,queuing_delay,TTFT,TPOT,ITL'
VRUN=configs/validation/RTX4090-Llama-3.1-8B

if [ -n "${LLMSIM_CHECK_DIR:-}" ]; then
    WORK=$LLMSIM_CHECK_DIR; mkdir -p "$WORK"; KEEP=1
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmsim-container-check.XXXXXX"); KEEP=0
fi

fail() { echo "container_check: FAIL: $* (logs in $WORK)" >&2; exit 1; }
log() { echo "[container_check] $*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-200; }

# --- engine --------------------------------------------------------------------------------
ENGINE=${LLMSIM_CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then ENGINE=podman
    else fail "no container engine: neither a working docker (daemon answering) nor podman found"
    fi
fi
command -v "$ENGINE" >/dev/null 2>&1 || fail "container engine '$ENGINE' not found"
"$ENGINE" info >/dev/null 2>"$WORK/engine.log" || fail "'$ENGINE info' failed: $(last_line "$WORK/engine.log")"
NETOPT=(); [ -n "$NET" ] && NETOPT=(--network="$NET")

# Containers are named and removed after each run instead of `run --rm`: the docker client on
# podman's Docker-compatible API (podman 4.3) reports exit status 0 for every `run --rm`.
NAMES=()
cleanup() { local n; for n in "${NAMES[@]}"; do "$ENGINE" rm -f "$n" >/dev/null 2>&1; done; }
trap cleanup EXIT
crun() {  # crun [run options] IMAGE CMD...: exit status of CMD
    local name="llmsim-check-$$-$RANDOM$RANDOM" rc
    NAMES+=("$name")
    "$ENGINE" run --name "$name" "${NETOPT[@]}" "$@"; rc=$?
    "$ENGINE" rm -f "$name" >/dev/null 2>&1
    return $rc
}

# Fingerprint of what the image is built from, to tell a real difference from concurrent edits.
fingerprint() {
    (cd "$ROOT" && find setup.py setup.cfg pyproject.toml MANIFEST.in README.md llmsim astra_bridge \
        configs profiles workloads -type f ! -path '*/__pycache__/*' ! -path 'llmsim/_data/*' \
        -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
FP_BEFORE=$(fingerprint)

# --- build ---------------------------------------------------------------------------------
BUILDARGS=(); [ -n "$BASE" ] && BUILDARGS=(--build-arg "BASE=$BASE")
[ -n "${LLMSIM_EXTRA_APT_PACKAGES:-}" ] && BUILDARGS+=(--build-arg "EXTRA_APT_PACKAGES=$LLMSIM_EXTRA_APT_PACKAGES")
log "engine: $ENGINE $("$ENGINE" --version 2>/dev/null | head -n 1); base: ${BASE:-Dockerfile default}; image: $IMAGE"
log "building (log: $WORK/build.log) ..."
t0=$(now)
"$ENGINE" build "${NETOPT[@]}" "${BUILDARGS[@]}" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 \
    || fail "image build failed: $(last_line "$WORK/build.log")"
BUILD_S=$(secs "$t0" "$(now)")
SIZE=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null) || fail "cannot inspect image $IMAGE"
SIZE_MB=$(awk -v s="$SIZE" 'BEGIN { printf "%.0f", s / 1e6 }')
log "built in ${BUILD_S} s, image size ${SIZE_MB} MB"

# --- simple commands -----------------------------------------------------------------------
crun "$IMAGE" sh -c 'exit 3' >/dev/null 2>&1
rc=$?; [ "$rc" = 3 ] || fail "the engine reports exit status $rc for a container that exits 3"
VERSION=$(crun "$IMAGE" llmsim --version 2>"$WORK/version.err") \
    || fail "llmsim --version in the image failed: $(last_line "$WORK/version.err")"
case "$VERSION" in llmsim\ *) ;; *) fail "llmsim --version printed '$VERSION'";; esac
log "in the image: $VERSION"
LAYOUT=$(crun "$IMAGE" sh -c 'pwd; test -e /src && echo src-present; python -c "import llmsim; print(llmsim.__file__)"' 2>&1) \
    || fail "layout check in the image failed: $LAYOUT"
case "$LAYOUT" in /work*) ;; *) fail "working directory in the image is not /work: $LAYOUT";; esac
case "$LAYOUT" in *src-present*) fail "/src is still in the image";; esac
case "$LAYOUT" in */opt/venv/lib/*) ;; *) fail "llmsim is not imported from /opt/venv: $LAYOUT";; esac
crun "$IMAGE" llmsim validate --help >"$WORK/validate-help.log" 2>&1 \
    && grep -q -- '--vllm-run' "$WORK/validate-help.log" \
    || fail "llmsim validate --help failed: $(last_line "$WORK/validate-help.log")"
crun "$IMAGE" llmsim doctor >"$WORK/doctor.log" 2>&1 && grep -q 'ASTRA-Sim' "$WORK/doctor.log" \
    || fail "llmsim doctor failed: $(last_line "$WORK/doctor.log")"

# --- the README example, output to a mounted folder ----------------------------------------
check_csv() {  # file what
    [ -s "$1" ] || fail "$2: no per-request CSV at $1"
    [ "$(head -n 1 "$1")" = "$HEADER" ] || fail "$2: unexpected CSV header: $(head -n 1 "$1" | cut -c1-120)"
    [ "$(wc -l <"$1")" -gt 1 ] || fail "$2: CSV has no rows"
}
mkdir -p "$WORK/out"
t0=$(now)
crun -v "$WORK/out:/out" "$IMAGE" llmsim "${EXAMPLE[@]}" --output /out/pp2_run.csv \
    >"$WORK/example.log" 2>&1 || fail "example in the image failed: $(last_line "$WORK/example.log")"
RUN_S=$(secs "$t0" "$(now)")
check_csv "$WORK/out/pp2_run.csv" "example in the image"
[ -s "$WORK/out/pp2_run.csv.meta.json" ] && [ -s "$WORK/out/pp2_run.csv.summary.json" ] \
    || fail "example in the image: meta.json / summary.json missing beside the CSV"
ROWS=$(( $(wc -l <"$WORK/out/pp2_run.csv") - 1 ))
log "example in the image: ${RUN_S} s (container start included), $ROWS requests"

# As an unprivileged user (what --user "$(id -u):$(id -g)" gives), into a writable folder.
mkdir -p "$WORK/out-user" && chmod 1777 "$WORK/out-user"
crun --user 65534:65534 -v "$WORK/out-user:/out" "$IMAGE" llmsim "${EXAMPLE[@]}" \
    --output /out/pp2_run.csv >"$WORK/example-user.log" 2>&1 \
    || fail "example as user 65534 failed: $(last_line "$WORK/example-user.log")"
cmp -s "$WORK/out/pp2_run.csv" "$WORK/out-user/pp2_run.csv" || fail "CSV as user 65534 differs from the one as root"

# llmsim validate on the shipped vLLM run (exercises matplotlib). A relative --vllm-run naming
# a shipped folder should resolve to the installed data; if it does not, say so and use the
# absolute path so the rest of the check still runs.
crun -v "$WORK/out:/out" "$IMAGE" llmsim validate --vllm-run "$VRUN" --out /out/validate \
    >"$WORK/validate.log" 2>&1
if [ $? -ne 0 ]; then
    log "note: 'llmsim validate --vllm-run $VRUN' outside the source tree: $(last_line "$WORK/validate.log")"
    log "note: retrying with the installed data's absolute path"
    crun -v "$WORK/out:/out" "$IMAGE" sh -c 'exec llmsim validate --vllm-run \
        "$(python -c "import llmsim, os; print(os.path.dirname(llmsim.__file__))")/_data/'"$VRUN"'" --out /out/validate' \
        >"$WORK/validate.log" 2>&1 || fail "llmsim validate in the image failed: $(last_line "$WORK/validate.log")"
fi
for f in table.csv latency_cdf.png throughput.png; do
    [ -s "$WORK/out/validate/$f" ] || fail "llmsim validate wrote no $f"
done

# --- optional: the example on a mounted ASTRA-Sim build -------------------------------------
ASTRA_NOTE=""
if [ -n "${LLMSIM_ASTRA_SIM:-}" ]; then
    [ -x "$LLMSIM_ASTRA_SIM" ] || fail "LLMSIM_ASTRA_SIM=$LLMSIM_ASTRA_SIM is not an executable file"
    ABIN=$(basename "$LLMSIM_ASTRA_SIM"); ADIR=$(cd "$(dirname "$LLMSIM_ASTRA_SIM")" && pwd)
    FLAVOR=llmservingsim; case "$ABIN" in AstraSim_*) FLAVOR=upstream;; esac
    mkdir -p "$WORK/astra"
    t0=$(now)
    crun -v "$ADIR:/astra:ro" -e "LLMSIM_ASTRA_SIM=/astra/$ABIN" -v "$WORK/astra:/out" "$IMAGE" llmsim \
        "${EXAMPLE[@]}" --backend astra-sim --astra-sim-flavor "$FLAVOR" --output /out/pp2_run.csv \
        >"$WORK/astra.log" 2>&1 || fail "example on ASTRA-Sim ($ABIN) in the image failed: $(last_line "$WORK/astra.log")"
    ASTRA_S=$(secs "$t0" "$(now)")
    check_csv "$WORK/astra/pp2_run.csv" "example on ASTRA-Sim in the image"
    if [ "$FLAVOR" = llmservingsim ]; then
        cmp -s "$WORK/astra/pp2_run.csv" "$WORK/out/pp2_run.csv" \
            || fail "example on ASTRA-Sim ($ABIN) gives a CSV different from the embedded backend's"
        ASTRA_NOTE=", ASTRA-Sim $ABIN ${ASTRA_S} s (CSV identical to the embedded backend's)"
    else
        ASTRA_NOTE=", ASTRA-Sim $ABIN ${ASTRA_S} s"
    fi
    log "example on ASTRA-Sim ($ABIN, flavour $FLAVOR) in the image: ${ASTRA_S} s"
fi

# --- the same example on the host ----------------------------------------------------------
HOST=${LLMSIM_HOST_CMD:-}
if [ -z "$HOST" ]; then command -v llmsim >/dev/null 2>&1 && HOST=llmsim || HOST=none; fi
if [ "$HOST" = none ]; then
    log "host comparison skipped (no llmsim on PATH; set LLMSIM_HOST_CMD)"
    HOST_NOTE="skipped"
else
    HOST_VERSION=$(cd "$ROOT" && $HOST --version 2>&1) || fail "host '$HOST --version' failed: $HOST_VERSION"
    mkdir -p "$WORK/host"
    t0=$(now)
    (cd "$ROOT" && $HOST "${EXAMPLE[@]}" --output "$WORK/host/pp2_run.csv") >"$WORK/host.log" 2>&1 \
        || fail "example on the host failed: $(last_line "$WORK/host.log")"
    HOST_S=$(secs "$t0" "$(now)")
    check_csv "$WORK/host/pp2_run.csv" "example on the host"
    if ! cmp -s "$WORK/host/pp2_run.csv" "$WORK/out/pp2_run.csv"; then
        [ "$(fingerprint)" != "$FP_BEFORE" ] \
            && fail "host and image CSVs differ, and the source changed during the check (concurrent edits?): rerun"
        [ "$HOST_VERSION" != "$VERSION" ] \
            && fail "host and image CSVs differ; host is '$HOST_VERSION', image '$VERSION'"
        fail "host and image CSVs differ: $(cmp "$WORK/host/pp2_run.csv" "$WORK/out/pp2_run.csv" 2>&1 | head -n 1)"
    fi
    cmp -s "$WORK/host/pp2_run.csv.summary.json" "$WORK/out/pp2_run.csv.summary.json" \
        || log "note: summary.json differs between host and image (the CSVs are identical)"
    HOST_NOTE="identical to the host's ($HOST_VERSION, ${HOST_S} s on the host)"
    log "per-request CSV: $HOST_NOTE"
fi

echo "container_check: OK: $ENGINE, base ${BASE:-default}, build ${BUILD_S} s, image ${SIZE_MB} MB," \
     "example ${RUN_S} s in the container ($ROWS requests)${ASTRA_NOTE}, CSV ${HOST_NOTE}"
[ "$KEEP" = 1 ] || rm -rf "$WORK"
exit 0
