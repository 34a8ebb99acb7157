# berth as a container image: a build stage with the dev dependencies, and a
# final stage with the runtime dependencies and the compiled code only,
# running as a non-root user with `berth` as its entrypoint.
#
#   docker build -t berth:0.1.0 .
#   docker run --rm -v /run/berth:/run/berth -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add $(stat -c %g /var/run/docker.sock) berth:0.1.0 serve --backend docker \
#     --listen unix:///run/berth/berth.sock
#
# NODE_IMAGE is any image with Node.js 24 (22.19+) and npm, e.g. the official
# node:24-bookworm-slim; the tests build one locally (no registry here).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# npm ci runs the build (prepare): protobuf generation and tsc need the sources.
COPY buf.yaml buf.gen.yaml tsconfig.json tsconfig.build.json ./
COPY scripts/ scripts/
COPY proto/ proto/
COPY bin/ bin/
COPY src/ src/
COPY plugins/ plugins/
# prepare builds the product alone (tsconfig.build.json): no tests, no benchmarks.
RUN npm ci --no-audit --no-fund

FROM ${NODE_IMAGE}
WORKDIR /opt/berth
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# No dev dependencies, and no bundled Node (an optional dependency): the image has its own.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force \
  && ln -s /opt/berth/bin/berth.js /usr/local/bin/berth \
  && mkdir -p /run/berth /var/lib/berth \
  && chown 10001:10001 /run/berth /var/lib/berth
COPY bin/ bin/
COPY --from=build /src/dist/ dist/
USER 10001:10001
# berth keeps its records (./.berth) and the host driver's work here.
WORKDIR /var/lib/berth
ENTRYPOINT ["berth"]
CMD ["serve", "--listen", "unix:///run/berth/berth.sock"]
