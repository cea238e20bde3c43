# ephemera/ephemera:dev: the static `ephemera` (CLI, controller, agent) and
# `ephemera-proxy`, nothing else. Built by ../build-images.sh from a staged
# rootfs (context = that rootfs); no registry needed.
FROM scratch
COPY root/ /
ENV PATH=/
ENTRYPOINT ["/ephemera"]
CMD ["--help"]
