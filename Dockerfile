# syntax=docker/dockerfile:1
# pop3-imap-proxy: build with the dev dependencies, run with the production ones only.

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
# Docker lets unprivileged processes bind ports below 1024 inside the container.
USER node
# /metrics, /healthz and /readyz; unset POP3PROXY_METRICS_PORT to turn the endpoint off.
ENV POP3PROXY_METRICS_PORT=9110
EXPOSE 110 995 9110
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.POP3PROXY_METRICS_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["--help"]
