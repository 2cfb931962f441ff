# syntax=docker/dockerfile:1
#
# underlay: one image for `underlay controller` and `underlay agent` (the arguments of each, in the shape of the
# Helm chart's Deployment and DaemonSet: deploy/container-args.json).
#
#   docker build -t underlay/underlay:0.1.0 .
#   docker run -d --name underlay-controller underlay/underlay:0.1.0 controller --etcd … --nats … --listen 0.0.0.0:7410
#   docker run -d --name underlay-agent --user 0 --network host --cap-add NET_ADMIN --cap-add NET_RAW \
#     -v /run/docker/plugins:/run/docker/plugins -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/underlay:/var/lib/underlay underlay/underlay:0.1.0 agent --node "$(hostname)" --nats …
#
# Offline (no registry): NODE_IMAGE names a local Node 20 image, and an npm cache in .npm-offline/_cacache
# (a copy of ~/.npm/_cacache) makes `npm ci` work without the network; test/lab/image.ts does both.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: every dependency, compile, then keep production dependencies only ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY libs/core/package.json libs/core/
COPY libs/adapters/package.json libs/adapters/
COPY services/controller/package.json services/controller/
COPY services/node-agent/package.json services/node-agent/
COPY cli/package.json cli/
COPY .npm-offline/ /tmp/npm-offline/
# --ignore-scripts: the root `prepare` compiles, which needs the sources (copied below); netlink's install step only
# picks its prebuilt binding, which it also does at run time.
RUN if [ -d /tmp/npm-offline/_cacache ]; then npm ci --ignore-scripts --offline --cache /tmp/npm-offline; \
    else npm ci --ignore-scripts; fi && rm -rf /tmp/npm-offline
COPY libs/ libs/
COPY services/ services/
COPY cli/ cli/
RUN node node_modules/typescript/bin/tsc -b \
 && npm prune --omit=dev --ignore-scripts --offline --cache /tmp/npm-empty \
 && rm -rf /tmp/npm-empty /root/.npm tsconfig*.json libs/*/src services/*/src cli/src \
           libs/*/tsconfig*.json services/*/tsconfig*.json cli/tsconfig*.json \
 && find . -name '*.tsbuildinfo' -not -path './node_modules/*' | xargs rm -f

# ---- run ----
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="underlay" \
      org.opencontainers.image.description="Docker containers on the physical network (macvlan, ipvlan) across a cluster: controller and node agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/underlay/underlay" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
# The controller runs as this user (uid 10001); the agent needs root (--user 0 / runAsUser: 0) for netlink, the
# plugin socket and the Docker socket.
RUN echo 'underlay:x:10001:10001:underlay:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'underlay:x:10001:' >> /etc/group \
 && mkdir -p /var/lib/underlay /etc/underlay /run/docker/plugins
COPY --from=build /app /app
COPY deploy/image/healthcheck.js deploy/image/plugin-entrypoint.js /app/
RUN ln -s /app/cli/bin/underlay.js /usr/local/bin/underlay
USER 10001:10001
EXPOSE 7410 7411
# /healthz of whichever service runs, on its --listen (deploy/image/healthcheck.js).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["node", "/app/healthcheck.js"]
ENTRYPOINT ["node", "/app/cli/bin/underlay.js"]
CMD ["--help"]
