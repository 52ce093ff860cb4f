# Meridian's one image: the static meridian binary on an empty base.
#
# Nothing is pulled: the base is `scratch`, and the binary is built on the host
# by scripts/build-image (CGO_ENABLED=0, so it needs no libc). Build the image
# with that script, not with `docker build` alone: it compiles bin/meridian and
# stages bin/rootfs first.
#
# There is no shell, no CA bundle and no /tmp: no role needs them (NATS TLS
# trusts the CA that `meridian secrets` generates, and the only files written
# go to /data and, by the one-shot secrets service, /secrets). Container healthchecks therefore run the
# binary itself: `meridian healthcheck URL`.
FROM scratch

# /data is owned by the unprivileged user, so that a fresh named volume
# mounted there (JetStream's store) is writable: Docker copies the image
# directory's ownership into an empty named volume.
COPY --chown=65534:65534 bin/rootfs/data/ /data/
# /secrets likewise, for the volume `meridian secrets` writes in compose.
COPY --chown=65534:65534 bin/rootfs/secrets/ /secrets/
COPY bin/meridian /meridian

USER 65534:65534
WORKDIR /data
ENTRYPOINT ["/meridian"]
CMD ["--help"]
