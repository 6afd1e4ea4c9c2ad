# Builds the keyledger binary and ships it on a slim Debian image.
FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keyledger

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 keyledger \
    && mkdir -p /var/lib/keyledger && chown keyledger /var/lib/keyledger
COPY --from=build /src/target/release/keyledger /usr/local/bin/keyledger
USER keyledger
# The key files (JWT_KEY_FILE, SIGNING_KEY_FILE) are created here on first start: keep it on a
# volume, or every new container signs with new keys.
WORKDIR /var/lib/keyledger
VOLUME /var/lib/keyledger
ENV BIND=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["keyledger"]
CMD ["serve"]
