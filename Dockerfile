# Builds the keyledger binary and ships it on a slim Debian image.
FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keyledger

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 keyledger
COPY --from=build /src/target/release/keyledger /usr/local/bin/keyledger
USER keyledger
ENV BIND=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["keyledger"]
CMD ["serve"]
