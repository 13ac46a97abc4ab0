# git-gate: needs git and ssh, so it starts from the local base image
# (debootstrap; see bootstrap-base.sh) rather than scratch. Build context: this
# file plus the release binary `git-gate` at the context root.
ARG BASE=bot-bottle/base:bookworm
FROM ${BASE}

# ssh looks its user up: uid 10003 gets a passwd entry and a home. /state is
# where the orchestrator mounts the mirrors' storage (tmpfs or a volume).
RUN echo 'git-gate:x:10003:10003:git-gate:/home/git-gate:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'git-gate:x:10003:' >> /etc/group \
 && mkdir -p /home/git-gate /state /config \
 && chown 10003:10003 /home/git-gate /state \
 && chmod 0700 /home/git-gate /state

COPY git-gate /usr/local/bin/git-gate

ENV HOME=/home/git-gate
USER 10003
EXPOSE 9418
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 CMD ["/usr/local/bin/git-gate","healthcheck"]
ENTRYPOINT ["/usr/local/bin/git-gate"]
CMD ["--config","/config/git-gate.toml"]
