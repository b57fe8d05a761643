# mailpost with a certificate that renews itself (ACME, e.g. Let's Encrypt).
#
# What it needs, once:
#   - DNS: an A (and/or AAAA) record for mail.example.com pointing at this box.
#   - Ports: the CA connects to port 80 (http-01) or 443 (tls-alpn-01) on that
#     address. Behind a container port map, map the outside port 80 (or 443)
#     to whatever http.bindings says inside; mailpost warns about the odd
#     inside port and that is fine.
# mailpost asks for the certificate at start-up and whenever a reload adds a
# name, serves a self-signed stand-in until it arrives (mailpost status says
# so), and renews it in the background renew_before its expiry.

hostname = "mail.example.com"
data_dir = "/var/lib/mailpost"
domains  = ["example.com"]

certificate "public" {
  acme {
    domains   = ["mail.example.com"]
    email     = "postmaster@example.com"
    challenge = "http-01"        # or "tls-alpn-01" with http.tls_bindings on 443
    # directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"  # to try things out
    # renew_before  = "720h"
  }
}

# Answers the CA's http-01 challenge (and says 404 to everything else).
http {
  bindings = ["[::]:80", "0.0.0.0:80"]
}

pop3 {
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}

submission {
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}

mailbox "alice@example.com" {
  # The password is "demo-password"; make your own with `mailpost hash-password`.
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
}
