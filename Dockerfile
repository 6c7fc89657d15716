# The inlet supervisor, for docker-compose.yml. Only the shipped packages are copied (no .venv, tests, fixtures);
# constraints.txt pins the same versions CI tests with.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY core ./core
COPY connectors ./connectors
COPY contracts ./contracts
# inlet/ holds the package root and symlinks to the three folders above (one `inlet` import namespace).
COPY inlet ./inlet
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 inlet \
    && mkdir /state && chown inlet /state

USER inlet
ENV INLET_STATE_DIR=/state
# SIGTERM drains (stop reading, flush, commit positions), so give it time: see stop_grace_period.
ENTRYPOINT ["inlet"]
CMD ["run", "--config", "/config"]
