# The untrusted agent the end-to-end tests run: a shell and the usual tools an
# attacker inside a bottle would reach for. Built from the local base
# (images/bootstrap-base.sh) or, where a registry exists, debian:bookworm-slim.
ARG BASE=bot-bottle/base:bookworm
FROM ${BASE}
# The local base already carries these packages; on a public base they are
# installed here (that path needs the Debian mirror at build time).
RUN set -e; missing=""; \
    for c in bash curl git ssh python3 ip dig update-ca-certificates; do command -v "$c" >/dev/null || missing=1; done; \
    if [ -n "$missing" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash curl git openssh-client python3 ca-certificates iproute2 dnsutils && rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 1000 agent && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent; \
    mkdir -p /workspace && chown agent:agent /workspace
USER 1000:1000
WORKDIR /workspace
CMD ["/bin/bash"]
