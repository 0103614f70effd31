# syntax=docker/dockerfile:1
# Sluice container image: `docker build -t sluice:0.1.0 .`
# Runs `sluice start` as the unprivileged user `node` (uid 1000) with the config file named by
# SLUICE_CONFIG (mount it at /etc/sluice/sluice.yaml); works with a read-only root file system.
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the HTTP port (9100).

ARG NODE_IMAGE=node:20-bookworm-slim

# 1. Build: every dependency (TypeScript), then compile src/ to dist/src.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# `npm ci` runs the postinstall script (patch-package), which needs the patches.
COPY patches ./patches
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts/copy-lua.mjs ./scripts/
RUN npx tsc -p tsconfig.json && node scripts/copy-lua.mjs

# 2. Production dependencies only, patched the same way.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY patches ./patches
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# 3. Runtime: the slim base, production node_modules, the compiled code and the patches it
#    checks, nothing else.
FROM ${NODE_IMAGE}
# A 32 MiB semi-space: fewer young-generation collections under load (docs/operations.md).
ENV NODE_ENV=production \
    SLUICE_CONFIG=/etc/sluice/sluice.yaml \
    NODE_OPTIONS=--max-semi-space-size=32
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist/src ./dist/src
COPY --chown=root:root package.json ./
# A node checks at start that every patch is in effect (src/engine/engine-check.ts).
COPY --chown=root:root patches ./patches
# Files are root-owned and read-only to the process; it writes nothing but stdout.
USER 1000:1000
# MQTT (tcp, tls, ws, wss) and HTTP (/healthz, /readyz, /metrics)
EXPOSE 1883 8883 8080 8443 9100
ENTRYPOINT ["node", "/app/dist/src/cli.js"]
CMD ["start"]
