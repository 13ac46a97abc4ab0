# Agent image for the `codex` provider template: the test-agent's tools plus the
# provider's CLI (@openai/codex from npm). Building it needs the Debian mirror and the npm
# registry at build time (`orchestrator images build --only agent-codex`); the
# tests use `test-agent` instead. Classic builder only: no syntax line, no
# RUN --mount, no heredocs.
ARG BASE=bot-bottle/base:bookworm
FROM ${BASE}
RUN set -e; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends nodejs npm bash curl git openssh-client python3 ca-certificates iproute2 dnsutils; \
    npm install -g --omit=dev @openai/codex; \
    npm cache clean --force; \
    rm -rf /var/lib/apt/lists/*; \
    command -v codex; \
    groupadd --gid 1000 agent && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent; \
    mkdir -p /workspace && chown agent:agent /workspace
USER 1000:1000
WORKDIR /workspace
ENV HOME=/home/agent
CMD ["codex"]
