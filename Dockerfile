# medfusion on a CUDA host. Build:  docker build -t medfusion .
# Run:    docker run --gpus all -v /data:/data -v medfusion-runs:/work/runs medfusion demo
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# CUDA build of torch first (matches the base image's CUDA 12.8), then medfusion and its deps.
RUN pip install --index-url https://download.pytorch.org/whl/cu128 "torch>=2.10"

RUN useradd --create-home --uid 10001 medfusion
# Build the wheel from the source tree in a throwaway folder, install it, delete the source: at run time
# only the installed package exists (configs and the review page are package data in the wheel).
COPY pyproject.toml README.md /tmp/src/
COPY medfusion /tmp/src/medfusion
# The build context has no git history: the version comes in as a build argument
# (docker build --build-arg MEDFUSION_VERSION=$(python -m setuptools_scm) .); without it 0.0.0+unknown.
ARG MEDFUSION_VERSION=0.0.0+unknown
RUN SETUPTOOLS_SCM_PRETEND_VERSION_FOR_MEDFUSION=$MEDFUSION_VERSION pip wheel --no-deps -w /tmp/wheels /tmp/src \
 && pip install /tmp/wheels/medfusion-*.whl \
 && rm -rf /tmp/src /tmp/wheels
# The work dir: shipped configs (-c demo, the default) resolve their relative paths here, so
# outputs go to /work/runs/<name>.
WORKDIR /work
RUN chown medfusion:medfusion /work

USER medfusion
# MLflow store, checkpoints and outputs live under /work/runs by default: mount a volume there,
# or set MLFLOW_TRACKING_URI to a tracking server. The site's pseudonym salt (created on first use,
# mode 0600) lives on that volume too, so pseudonyms stay the same from one container to the next.
ENV MEDFUSION_HOME=/work/runs/.medfusion
VOLUME ["/work/runs"]
ENTRYPOINT ["medfusion"]
CMD ["--help"]
