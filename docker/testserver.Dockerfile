# The mailprobe test mail server (Postfix + Dovecot) in a container.
# Build from the repository root:
#   docker build -f docker/testserver.Dockerfile -t mailprobe-testserver .
# State (password, CA file, Maildirs, logs) lives in the volume below;
# other containers mount it read-only to get the password and the CA file.
FROM debian:bookworm-slim

COPY scripts/testserver.sh /usr/local/bin/testserver.sh
# Packages only; configuration, certificates and password are made at start,
# so every container (volume) gets its own.
RUN /usr/local/bin/testserver.sh install && rm -rf /var/lib/apt/lists/*

# Listen on all interfaces so other containers can reach the server.
ENV MAILPROBE_TEST_BIND=0.0.0.0
EXPOSE 2525 2587 2465 2143 2993 2110 2995
VOLUME /var/lib/mailprobe-testserver

HEALTHCHECK --interval=5s --timeout=20s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/testserver.sh", "status"]
# start, then stay in the foreground tailing the logs; SIGTERM stops cleanly.
CMD ["/usr/local/bin/testserver.sh", "run"]
