# Test fixture, never part of a bottle: an ssh git server standing in for a
# forge. Run it with AUTHORIZED_KEY (an ssh public key) and REPOS (names of
# bare repositories to create under /srv/git). The host key is generated at
# start and printed as "HOSTKEY <type> <base64>"; it is also readable at
# /etc/ssh/ssh_host_ed25519_key.pub.
ARG BASE=bot-bottle/base:bookworm
FROM ${BASE}

RUN echo 'git:x:2000:2000:git:/home/git:/usr/bin/git-shell' >> /etc/passwd \
 && echo 'git:x:2000:' >> /etc/group \
 && echo 'git:*:19000:0:99999:7:::' >> /etc/shadow \
 && mkdir -p /home/git/.ssh /srv/git /run/sshd \
 && chown -R 2000:2000 /home/git /srv/git \
 && chmod 0755 /home/git && chmod 0700 /home/git/.ssh \
 && rm -f /etc/ssh/ssh_host_*

RUN printf '%s\n' \
  '#!/bin/sh' \
  'set -eu' \
  'mkdir -p /run/sshd' \
  'rm -f /etc/ssh/ssh_host_*' \
  'ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key' \
  'printf "%s\n" "${AUTHORIZED_KEY:?AUTHORIZED_KEY must hold an ssh public key}" > /home/git/.ssh/authorized_keys' \
  'chown 2000:2000 /home/git/.ssh/authorized_keys && chmod 0600 /home/git/.ssh/authorized_keys' \
  'for r in ${REPOS:-}; do su -s /bin/sh git -c "git init -q --bare /srv/git/$r.git && git --git-dir=/srv/git/$r.git symbolic-ref HEAD refs/heads/main"; done' \
  'echo "HOSTKEY $(cut -d" " -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"' \
  'exec /usr/sbin/sshd -D -e -p "${PORT:-22}" -h /etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o PermitRootLogin=no -o AllowUsers=git -o UsePAM=no -o PrintMotd=no' \
  > /usr/local/bin/upstream-sshd && chmod 0755 /usr/local/bin/upstream-sshd

EXPOSE 22
CMD ["/usr/local/bin/upstream-sshd"]
