# One image with every chat-memory binary; the container's command picks the service:
#   gateway | memory-store | summarizer-worker | summarizer-agent | chat-memory-mcp | chat-memory-migrate | chat-memory
# Build: docker build -t chat-memory:local .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# `https` (on by default; named here so the image never loses it) lets the agent's
# openai backend reach hosted endpoints and the worker an https:// agent (rustls with ring).
RUN cargo build --release --locked --bins --features summarizer-agent/https \
 && mkdir /out \
 && cp target/release/gateway target/release/memory-store target/release/summarizer-worker \
       target/release/summarizer-agent target/release/chat-memory-mcp target/release/chat-memory-migrate \
       target/release/chat-memory /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home chat-memory
COPY --from=build /out/ /usr/local/bin/
USER 10001
# gRPC: gateway 50051, memory-store 50052, agent 50053, worker 50054; MCP front 50055; /metrics: 9101-9105.
EXPOSE 50051 50052 50053 50054 50055 9101 9102 9103 9104 9105
CMD ["gateway"]
