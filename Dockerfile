# The dump job's image: `backstop` and the pg_dump it runs, as a non-root
# user. ENTRYPOINT backstop, CMD dump: configured by environment variables
# (README "Configuration"), so the same image runs as a Kubernetes CronJob
# (infra/k8s) or a Cloud Run job (infra/gcp/dump_job.tf).
#
# The binary is built on the host and handed in through the build context
# (no Rust toolchain in the image, so the image holds nothing but what runs):
#
#   cargo build --release -p backstop-cli
#   docker build --build-arg BACKSTOP_BIN=target/release/backstop -t IMAGE .
#
# It must link against a glibc no newer than the base image's (build on
# Debian 12 for the default base). .dockerignore keeps the context to that
# one file. tests/container/smoke.sh builds and runs this image with podman.
#
# PG_MAJOR: pg_dump of a major version dumps servers of that version and
# older (back to 9.2), so the newest client the base image's archive has
# covers every server up to it: Debian 12 has 15; for a PostgreSQL 16/17
# server use --build-arg BASE_IMAGE=docker.io/library/debian:trixie-slim
# --build-arg PG_MAJOR=17.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG PG_MAJOR=15
ARG BACKSTOP_BIN=target/release/backstop

# A base that already holds the client (as the smoke test's, made with
# mmdebstrap) needs no apt run; a slim base gets it from its archive.
RUN set -eu; \
    if [ ! -x "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" ] || [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "postgresql-client-${PG_MAJOR}" ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version; \
    groupadd --gid 10001 backstop; \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin backstop

COPY ${BACKSTOP_BIN} /usr/local/bin/backstop

# TMPDIR: the one writable directory under a read-only root filesystem (an
# emptyDir in infra/k8s); JSON logs for the platform's log collector.
ENV BACKSTOP_PG_BINDIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    TMPDIR=/tmp \
    BACKSTOP_LOG_FORMAT=json

# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/backstop"]
CMD ["dump"]
