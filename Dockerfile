# mailpost: one static binary in an otherwise empty image.
#
#   docker build -t mailpost .
#   docker run -d --name mailpost \
#     -v /srv/mailpost/etc:/etc/mailpost:ro -v mailpost-data:/data \
#     -p 995:10995 -p 110:10110 -p 465:10465 -p 587:10587 -p 25:10025 -p 80:8080 \
#     mailpost
#
# The process runs as uid/gid 65532 ("mailpost"), not root, so it binds only
# high ports; the -p maps put the standard ports in front of them (see
# examples/container.hcl, whose external_connection_settings name the outside
# ports). The config and certificates are mounted read-only at /etc/mailpost;
# everything mailpost writes (one bbolt file and the control socket) is in the
# /data volume. `container_test.go` builds this same root and runs it.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: a static binary with Go's own resolver, needing no libc in
# the image. -trimpath and -s -w keep paths and debug tables out of it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mailpost . \
 && mkdir -p /out/root/etc /out/root/data /out/root/etc/mailpost \
 && echo 'mailpost:x:65532:65532:mailpost:/data:/nonexistent' > /out/root/etc/passwd \
 && echo 'mailpost:x:65532:' > /out/root/etc/group

FROM scratch
# Trust roots for ACME directories, smarthosts and outbound STARTTLS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/root/etc/passwd /out/root/etc/group /etc/
COPY --from=build /out/root/etc/mailpost /etc/mailpost
COPY --from=build --chown=65532:65532 --chmod=0700 /out/root/data /data
COPY --from=build /out/mailpost /mailpost
USER 65532:65532
ENV HOME=/data
VOLUME ["/data"]
# POP3S, POP3+STLS, submissions, submission, inbound MX, HTTP (ACME/autoconfig), HTTPS.
EXPOSE 10995 10110 10465 10587 10025 8080 8443
# The server drains sessions and exits cleanly on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/mailpost"]
CMD ["serve", "-config", "/etc/mailpost/mailpost.hcl"]
