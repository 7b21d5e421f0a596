# The meshagent image: the agent, the injector and the iptables init step are one command,
# `meshagent`. Build: docker build -t meshagent:0.1.0 .
#
# The install step is scripts/install-agent.sh, which tests/integration/image/ runs as well
# (no Docker engine there), so what this file installs is tested.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /src
RUN /src/scripts/install-agent.sh /opt/meshagent

FROM python:3.11-slim-bookworm
# iptables (iptables-restore, ip6tables) for `meshagent iptables install`, the init container.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
# The uid/gid the chart runs the agent as (agent.uid / agent.gid) and iptables excludes.
RUN groupadd --system --gid 1337 meshagent \
 && useradd --system --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin meshagent
# Same base image in both stages: the virtualenv's python links stay valid.
COPY --from=build /opt/meshagent /opt/meshagent
ENV PATH=/opt/meshagent/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 1337:1337
EXPOSE 15000
ENTRYPOINT ["meshagent"]
CMD ["run", "-c", "/etc/meshagent/agent.yaml"]
