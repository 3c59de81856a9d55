# The coder_assets code-location image (deploy/k8s/): the code server of the user deployment and,
# through K8sRunLauncher, one pod per run. Build it from the repository root:
#   docker build -t registry.example.lan/homelab/coder-assets:$(git rev-parse --short HEAD) .
FROM python:3.11-slim

# git and git-lfs: repository mirrors and adapter releases; openssh-client: waterdeep steps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git git-lfs openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The dependency list is pyproject.toml's; deploy/constraints.txt, generated from it
# (coder_assets/core/constraints.py), locks every version. test_image.py keeps the two in step.
WORKDIR /opt/coder-assets
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt deploy/constraints.txt
COPY coder_assets coder_assets
RUN pip install --no-cache-dir --constraint deploy/constraints.txt .

# Non-root; CODER_ASSETS_HOME is the pod's cache (mirrors, the model copy, built versions):
# every value another run reads lives in the bucket.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin dagster \
    && mkdir -p /home/dagster/.coder-assets /home/dagster/.ssh \
    && chown -R dagster:dagster /home/dagster
USER 10001
ENV HOME=/home/dagster \
    CODER_ASSETS_HOME=/home/dagster/.coder-assets \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PYTHONUNBUFFERED=1
WORKDIR /home/dagster

EXPOSE 4266
CMD ["dagster", "code-server", "start", "-m", "coder_assets.definitions", \
     "--location-name", "coder_assets", "-h", "0.0.0.0", "-p", "4266"]
