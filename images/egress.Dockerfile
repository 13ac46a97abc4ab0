# egress: the only way out of a bottle. Static binary, nothing else in the image.
# Build context: a directory holding this file and the release binary `egress`.
FROM scratch
COPY egress /usr/local/bin/egress
USER 10001
EXPOSE 3128
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 CMD ["/usr/local/bin/egress","healthcheck"]
ENTRYPOINT ["/usr/local/bin/egress"]
CMD ["--config","/config/egress.toml"]
