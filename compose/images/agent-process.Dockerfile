# ephemera/agent-process:dev: the Python runtime image plus the static
# `ephemera` binary, for agents that use the *process* runtime (instances are
# child processes of the agent, so the agent's own filesystem needs /bin/sh,
# Python, the proxy and the intercept). When the agent gets `--runtime docker`,
# agents run from ephemera/ephemera:dev instead and start ephemera/python:dev
# containers as siblings. Shares every layer of ephemera/python:dev.
FROM ephemera/python:dev
COPY ephemera /opt/ephemera/bin/ephemera
ENTRYPOINT ["/opt/ephemera/bin/ephemera"]
CMD ["--help"]
