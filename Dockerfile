# llmsim container image. See docs/container.md.
#
#   docker build -t llmsim .
#   docker run --rm -v "$PWD/out:/out" llmsim llmsim --cluster-config configs/cluster/single_node_pp_instance.json \
#       --dtype float16 --dataset workloads/example_trace.jsonl --output /out/pp2_run.csv
#
# BASE may be any Debian-like image: the default pulls python:3.11-slim-bookworm from a registry;
# a machine without registry access builds from a local Debian base made with debootstrap
# (--build-arg BASE=local/debian:bookworm), where Python is installed from Debian below.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS base
# Python 3 with venv, and CA certificates, only when the base lacks them (a bare Debian base).
RUN if python3 -c 'import venv, ensurepip' 2>/dev/null && [ -s /etc/ssl/certs/ca-certificates.crt ]; then \
        echo "base has Python $(python3 -c 'import platform; print(platform.python_version())')"; \
    else \
        export DEBIAN_FRONTEND=noninteractive \
        && apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi

# Build stage: the source is copied here only; the final image gets the finished venv.
FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /src
# Non-editable install: the wheel carries profiles/, configs/, workloads/ as llmsim/_data/.
# The dependencies' own test suites and pyarrow's C++ headers are not needed to run (~80 MB).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /src \
    && rm -rf /src \
    && find /opt/venv/lib/python3*/site-packages -mindepth 2 -maxdepth 4 -type d -name tests \
            -not -path '*/llmsim/*' -not -path '*/astra_bridge/*' -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/pyarrow/include /opt/venv/lib/python3*/site-packages/pyarrow/src \
    && cd /tmp && /opt/venv/bin/llmsim --version

FROM base
# Optional Debian packages for the final image, e.g. the shared libraries of an ASTRA-Sim build
# you mount at run time: --build-arg EXTRA_APT_PACKAGES=libprotobuf32 (see docs/container.md).
ARG EXTRA_APT_PACKAGES=""
RUN if [ -n "$EXTRA_APT_PACKAGES" ]; then \
        export DEBIAN_FRONTEND=noninteractive \
        && apt-get update \
        && apt-get install -y --no-install-recommends $EXTRA_APT_PACKAGES \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Runs as root by default so that a bind-mounted /out is writable whoever owns it (docker and
# rootful podman create a missing host folder as root). To get files owned by you, add
# --user "$(id -u):$(id -g)": the venv is world-readable and nothing else needs to be writable.
# /work is empty: relative configs/... and workloads/... paths resolve to the installed data,
# or to your own files when you mount a folder with configs/ or profiles/ here.
RUN mkdir -p /work /out && chmod 1777 /work /out
WORKDIR /work
CMD ["llmsim", "--help"]
