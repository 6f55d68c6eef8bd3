# syntax=docker/dockerfile:1
#
# @modelcontextprotocol/server-everything, the example upstream MCP server of
# docker-compose.yml, over streamable HTTP on 3001 (/mcp). It is a server nobody
# here wrote: the gateway fronts it as it would any existing MCP server.
#
# Build from the repository root (docker compose does):
#   docker build -f deploy/compose/everything.Dockerfile -t mcpauthz/everything .
#
# The version is the one e2e/ts/package-lock.json pins, the one the tests run
# against: npm ci installs exactly the lockfile. everything.Dockerfile.dockerignore
# (BuildKit reads it instead of the repository's .dockerignore) sends the builder
# nothing but e2e/ts's package.json and lockfile.
#
# The image also runs compose's identity-key service (a one-shot that generates
# the gateway's identity signing key): it has Node, and nothing else is needed.

FROM node:20-bookworm-slim
WORKDIR /app
COPY e2e/ts/package.json e2e/ts/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force
# The image's unprivileged user.
USER node
ENV PORT=3001 NODE_ENV=production
EXPOSE 3001
# Any HTTP answer means it serves (GET /mcp without a session is a 400); node
# is the only tool in the image that can ask.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:3001/mcp').then(() => process.exit(0), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js"]
CMD ["streamableHttp"]
