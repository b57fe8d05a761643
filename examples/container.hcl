# mailpost in a container (see Dockerfile and examples/compose.yaml).
#
# Mounted read-only at /etc/mailpost/mailpost.hcl, with the certificate next
# to it; the store lives in the /data volume. The process runs as uid 65532,
# which cannot bind ports below 1024, so mailpost listens on high ports and
# the container runtime maps the standard ones onto them:
#
#   995 -> 10995   POP3 over TLS          110 -> 10110   POP3 + STLS
#   465 -> 10465   submission over TLS    587 -> 10587   submission + STARTTLS
#    25 -> 10025   inbound MX              80 -> 8080    HTTP (ACME http-01, autoconfig, redirects)
#                                         443 -> 8443    HTTPS (autodiscover, settings page, tls-alpn-01)
#
# Clients only ever see the outside ports, so external_connection_settings
# name those (995, 465, ...), not the ones bound here.

hostname = "mail.example.com"
data_dir = "/data"
domains  = ["example.com"]

certificate "main" {
  cert_file = "/etc/mailpost/fullchain.pem"
  key_file  = "/etc/mailpost/privkey.pem"
}

pop3 {
  ssl_bindings                 = ["0.0.0.0:10995", "[::]:10995"]
  unencrypted_or_tls_bindings  = ["0.0.0.0:10110", "[::]:10110"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}

submission {
  ssl_bindings                 = ["0.0.0.0:10465", "[::]:10465"]
  unencrypted_or_tls_bindings  = ["0.0.0.0:10587", "[::]:10587"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}

inbound {
  bindings = ["0.0.0.0:10025", "[::]:10025"]
}

# Client setup (Thunderbird autoconfig, Outlook autodiscover, the Apple
# profile), the settings page, and ACME challenges if a certificate uses acme.
http {
  bindings     = ["0.0.0.0:8080", "[::]:8080"]
  tls_bindings = ["0.0.0.0:8443", "[::]:8443"]
}

# Metrics for a scraper in the same network namespace only (compose service
# or pod); publish it with care, it has no authentication.
admin {
  bindings = ["127.0.0.1:9025"]
}

mailbox "you@example.com" {
  # mailpost hash-password (docker run --rm -i IMAGE hash-password)
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  aliases       = ["postmaster@example.com"]
}
