# git-gate: runs C git on the most hostile input of a bottle and holds the push
# key, so its image holds only what the gate runs (traced with strace over the
# git-gate tests: git, git-daemon, ssh, sh and the gate's own binary are all
# that is ever executed). Stage `rootfs` starts from the local base image
# (debootstrap; see bootstrap-base.sh), which has git and the ssh client, and
# copies into /out exactly:
# - git, and in git's exec path the link `git` (git runs its builtins as
#   `<exec-path>/git <cmd>`: upload-pack, receive-pack, index-pack,
#   unpack-objects, pack-objects, fetch, gc...) and `git-daemon`, the one
#   program there that is not a builtin;
# - the ssh client, and /bin/sh (git runs GIT_SSH_COMMAND through it, ssh runs
#   ProxyCommand through it);
# - the shared libraries `ldd` names for those and the dynamic loader;
# - the CA bundle, passwd/group for uid 10003 (ssh looks its user up),
#   nsswitch.conf (files only: nothing to dlopen), an empty git template
#   directory, and the home and state directories.
# The final image is that tree on `scratch`: no package manager, no perl or
# python, no curl, no sshd, no coreutils. Build context: this file plus the
# release binary `git-gate` at the context root. Nothing is fetched.
ARG BASE=bot-bottle/base:bookworm
FROM ${BASE} AS rootfs

RUN set -eu; \
    out=/out; \
    exec_path="$(git --exec-path)"; \
    bins="$(command -v git) $exec_path/git-daemon $(command -v ssh) /bin/sh"; \
    mkdir -p "$out"; \
    for d in bin sbin lib lib32 lib64 libx32; do \
      if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$out/$d"; fi; \
    done; \
    put() { \
      for f in "$@"; do \
        d="$out$(realpath "$(dirname "$f")")"; \
        mkdir -p "$d"; \
        cp -L "$f" "$d/"; \
      done; \
    }; \
    put $bins; \
    for b in $bins; do \
      ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; \
    done | sort -u > /tmp/libs; \
    put $(cat /tmp/libs); \
    ln -s "$(command -v git)" "$out$exec_path/git"; \
    put /etc/ssl/certs/ca-certificates.crt; \
    mkdir -p "$out/usr/share/git-core/templates" "$out/usr/local/bin" \
             "$out/home/git-gate" "$out/state" "$out/config" "$out/tmp"; \
    printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
      'git-gate:x:10003:10003:git-gate:/home/git-gate:/usr/sbin/nologin' > "$out/etc/passwd"; \
    printf '%s\n' 'root:x:0:' 'git-gate:x:10003:' > "$out/etc/group"; \
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > "$out/etc/nsswitch.conf"; \
    chown 10003:10003 "$out/home/git-gate" "$out/state"; \
    chmod 0700 "$out/home/git-gate" "$out/state"; \
    chmod 1777 "$out/tmp"; \
    for d in bin sbin lib lib32 lib64 libx32; do \
      if [ -L "$out/$d" ] && [ ! -e "$out/$d" ]; then rm "$out/$d"; fi; \
    done

FROM scratch
COPY --from=rootfs /out /
COPY git-gate /usr/local/bin/git-gate

ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/git-gate
USER 10003
EXPOSE 9418
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 CMD ["/usr/local/bin/git-gate","healthcheck"]
ENTRYPOINT ["/usr/local/bin/git-gate"]
CMD ["--config","/config/git-gate.toml"]
