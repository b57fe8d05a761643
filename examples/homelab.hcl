# mailpost for a homelab or a small VPS: real ports, a certificate from files
# you renew with certbot (or any ACME client), two mailboxes.
#
# Each setting names the Exchange Set-PopSettings parameter it mirrors, so a
# reader of the Exchange POP3 guide finds their way. Check a change before
# the server sees it with:   mailpost check -config /etc/mailpost/mailpost.hcl
# Relative paths are resolved against the directory holding this file.

# The server's fully qualified name: used in the greeting and as the default
# certificate name.
hostname = "mail.example.com"

# Where mailpost.db lives: mail, config revisions, generated certificates.
data_dir = "/var/lib/mailpost"

# Mail for these domains is local.
domains = ["example.com"]

# The certificate pool. Listeners pick a certificate by name
# (x509_certificate_name below), clients by SNI. The files are re-read on
# reload, so a certbot deploy hook only has to touch this file.
certificate "public" {
  cert_file = "/etc/letsencrypt/live/mail.example.com/fullchain.pem"
  key_file  = "/etc/letsencrypt/live/mail.example.com/privkey.pem"
}

pop3 {
  # Exchange: -X509CertificateName. The certificate presented to clients that
  # send no SNI (most connect by host name and do send it).
  x509_certificate_name = "mail.example.com"

  # Exchange: -SSLBindings. Implicit TLS, RFC 8314 (port 995). [::] is bound
  # IPv6-only, so it and 0.0.0.0 can both be listed, as Exchange does.
  ssl_bindings = ["[::]:995", "0.0.0.0:995"]

  # Exchange: -UnencryptedOrTLSBindings. Plain text, upgraded with STLS
  # (port 110). Leave it out ([]) to offer implicit TLS only.
  unencrypted_or_tls_bindings = ["[::]:110", "0.0.0.0:110"]

  # Exchange: -ExternalConnectionSettings. What clients are told to use:
  # FQDN:port:method, method ssl (implicit TLS), tls (STLS) or empty
  # (unencrypted). Behind a port map, list the outside ports.
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]

  # Exchange: -InternalConnectionSettings. The same, for clients on the LAN.
  internal_connection_settings = ["mail.example.com:995:ssl"]

  # Exchange: -LoginType. secure_login refuses USER/PASS/AUTH until the
  # connection is encrypted; plain_text_login allows them in clear.
  login_type = "secure_login"

  # Exchange: -PreAuthenticatedConnectionTimeout and
  # -AuthenticatedConnectionTimeout. Idle time allowed before and after login.
  pre_authenticated_timeout = "60s"
  authenticated_timeout     = "30m"

  # Exchange: -MaxConnections, -MaxConnectionsPerIP, -MaxCommandSize.
  max_connections        = 2000
  max_connections_per_ip = 20
  max_command_size       = 512

  # Exchange: -Banner. The text after +OK in the greeting.
  banner = "mailpost POP3 ready"
}

# Mailboxes. Users log in with the full address. Make hashes with
#   mailpost hash-password
mailbox "alice@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  pop3          = true                     # Exchange: PopEnabled
  aliases       = ["a.smith@example.com"]  # mail to these lands here too
  quota         = "2GiB"                   # deliveries beyond this are refused
}

mailbox "admin@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  pop3          = false                    # this mailbox may not be opened over POP3
}
