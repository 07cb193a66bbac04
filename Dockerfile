# User code image: the code location, run workers and region steps all run from it.
# Build: docker build --build-arg GIT_REVISION=$(git rev-parse HEAD) \
#          -t REGION-docker.pkg.dev/PROJECT/wildfire-risk/user-code:$(git rev-parse --short HEAD) .
# (immutable tags only: the Helm values pin the image by git revision.)
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY risk_assets ./risk_assets
COPY resources ./resources
COPY risk_model ./risk_model
# The project's runtime dependencies at exactly the locked versions: the lock file constrains every
# package pip installs, and the dev tools it also lists (pytest, moto, ...) are not installed.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --constraint requirements.lock . \
    && /opt/venv/bin/pip check

FROM python:3.12-slim-bookworm
# The git commit of this code, recorded in every release manifest (the image has no .git).
ARG GIT_REVISION=unknown
# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a numeric USER (helm values use 10001).
RUN groupadd --gid 10001 dagster \
    && useradd --uid 10001 --gid 10001 --home-dir /opt/dagster --create-home --shell /usr/sbin/nologin dagster
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    RISK_HOME=/tmp/risk \
    RISK_GIT_REVISION=$GIT_REVISION \
    PYTHONUNBUFFERED=1
RUN mkdir -p "$DAGSTER_HOME" && chown dagster:dagster "$DAGSTER_HOME"
WORKDIR /opt/dagster
# No credentials in the image: GCS access comes from Workload Identity at run time.
USER 10001:10001
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "--module-name", "risk_assets.definitions", "--attribute", "defs"]
