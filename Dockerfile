# pop3-imap-proxy: build with the dev dependencies, run with the production ones only.
# Builds with BuildKit or with the classic builder (DOCKER_BUILDKIT=0): no `# syntax=` line, so
# nothing is fetched besides the base image and the npm packages.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The image's defaults come as a config file (metrics on port 9110), so that anything you give
# wins over them: a flag, a POP3PROXY_* variable, or a --config file of your own (which replaces
# this one: keep metrics-port in it for the health check).
COPY docker/image-defaults.yaml /etc/pop3-imap-proxy/defaults.yaml
ENV POP3PROXY_CONFIG=/etc/pop3-imap-proxy/defaults.yaml
# The proxy writes the addresses it really listens on here; the HEALTHCHECK reads them and asks
# /healthz, wherever the metrics port came from. With --read-only, give the container --tmpfs /tmp.
ENV POP3PROXY_STATUS_FILE=/tmp/pop3-imap-proxy.status.json
# Runs as uid 1000. In a bridge network Docker lets it bind ports below 1024; with
# --network host it cannot: give it --port 1110 (or another port above 1023) there.
USER node
EXPOSE 110 995 9110
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["node", "dist/cli.js", "healthcheck"]
# Flags follow the image name (docker run IMAGE --imap-host mail.example.com), or the settings
# come from POP3PROXY_* variables alone: no default command.
ENTRYPOINT ["node", "dist/cli.js"]
CMD []
