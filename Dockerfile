# tenantdb's container image: a release build on Debian, run from a
# distroless base as a non-root user. TLS is rustls (no OpenSSL), so the
# image holds the binary and glibc, nothing else.
#   docker build -t tenantdb:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tenantdb \
 && install -D -m 0755 target/release/tenantdb /out/tenantdb

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tenantdb /usr/local/bin/tenantdb
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tenantdb"]
CMD ["run"]
