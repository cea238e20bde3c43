# ephemera/python:dev: the function runtime image. A CPython copied from the
# build host with its shared libraries, /bin/sh (dash), /usr/bin/env and a
# few coreutils, plus Ephemera's in-instance pieces at fixed paths:
#   /opt/ephemera/bin/ephemera-proxy         (static)
#   /opt/ephemera/bin/ephemera-python        (the action-loop launcher)
#   /opt/ephemera/lib/libephemera_intercept.so
# Built by ../build-images.sh from a staged rootfs; no registry needed.
FROM scratch
COPY root/ /
ENV PATH=/opt/ephemera/bin:/usr/local/bin:/usr/bin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    EPHEMERA_PROXY_BIN=/opt/ephemera/bin/ephemera-proxy \
    EPHEMERA_INTERCEPT_LIB=/opt/ephemera/lib/libephemera_intercept.so
CMD ["python3"]
