# cred-proxy: holds the bottle's real tokens; reachable only from egress on the
# broker network. Build context: this file plus the static release binary
# `cred-proxy` (cargo build --release -p cred-proxy). Classic builder only.
FROM scratch
COPY cred-proxy /usr/local/bin/cred-proxy
USER 10002
EXPOSE 9099
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 CMD ["/usr/local/bin/cred-proxy","healthcheck"]
ENTRYPOINT ["/usr/local/bin/cred-proxy"]
CMD ["--config","/config/cred-proxy.toml"]
