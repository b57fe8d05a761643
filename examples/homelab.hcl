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

submission {
  # Mail clients send through here (RFC 6409). The attribute names are the
  # POP3 block's; the comments name the Exchange Set-ReceiveConnector
  # parameter of the "Client Frontend" connector each one mirrors.

  # Exchange: -TlsCertificateName. Defaults to hostname.
  x509_certificate_name = "mail.example.com"

  # Implicit TLS on port 465, which RFC 8314 prefers. Exchange
  # has no such connector by default.
  ssl_bindings = ["[::]:465", "0.0.0.0:465"]

  # Exchange: -Bindings (port 587). Plain at first; STARTTLS (RFC 3207) is
  # required before AUTH, like -AuthMechanism BasicAuthRequireTLS, so
  # passwords never travel in clear.
  unencrypted_or_tls_bindings = ["[::]:587", "0.0.0.0:587"]

  # What clients are told to use, as in the pop3 block: FQDN:port:method,
  # method ssl or tls (Exchange: -AdvertiseClientSettings). An empty,
  # unencrypted method is an error here: there is no plain_text_login for
  # submission.
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
  internal_connection_settings = []

  # Exchange: -MaxMessageSize, -MaxRecipientsPerMessage. Sizes take B, KB,
  # MB, GB or KiB, MiB, GiB.
  max_message_size = "35MiB"
  max_recipients   = 100

  # Exchange: -ConnectionInactivityTimeout. RFC 5321 section 4.5.3.2.7 asks
  # for at least 5 minutes.
  timeout = "5m"

  # Exchange: -MaxInboundConnection, -MaxInboundConnectionPerSource.
  max_connections        = 500
  max_connections_per_ip = 20
}

# Receive mail from other servers for the domains above (the MX role, port
# 25; Exchange's "Default Frontend" connector). Leave the block out to only
# send and read. STARTTLS is offered when a certificate covers
# x509_certificate_name and is never required: other servers may deliver
# unencrypted (RFC 3207 section 4).
inbound {
  bindings               = ["[::]:25", "0.0.0.0:25"]  # Exchange: -Bindings
  x509_certificate_name  = "mail.example.com"         # Exchange: -TlsCertificateName
  max_message_size       = "35MiB"                    # Exchange: -MaxMessageSize
  max_recipients         = 100                        # Exchange: -MaxRecipientsPerMessage
  timeout                = "5m"                       # Exchange: -ConnectionInactivityTimeout
  max_connections        = 500                        # Exchange: -MaxInboundConnection
  max_connections_per_ip = 10                         # Exchange: -MaxInboundConnectionPerSource
  rate_limit_per_ip      = 60                         # Exchange: -MessageRateLimit per IP; 0 = unlimited
}

# Password guessing (no fail2ban needed): failed logins per window from one
# address, its wider networks, and per account; over a limit the client is
# told to try again later, before any password hashing. These are the
# defaults; uncomment to change them (0 turns a tier off).
# login_limits {
#   ipv4_32 = 10
#   ipv4_26 = 30
#   ipv4_21 = 100
#   ipv6_64 = 10
#   ipv6_48 = 30
#   ipv6_32 = 100
#   account = 30
#   window  = "15m"
#   exempt_after_success = "24h"   # a network that logged in keeps access
# }

# Mailboxes. Users log in with the full address. Make hashes with
#   mailpost hash-password
mailbox "alice@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  pop3          = true                     # Exchange: PopEnabled
  aliases       = ["a.smith@example.com"]  # mail to these lands here too
  quota         = "2GiB"                   # deliveries beyond this are refused
  submission    = true                     # may send through the submission block
  # The addresses this mailbox may send as (MAIL FROM and From:); by
  # default its address and aliases. Exchange: SendAs permission.
  send_as       = ["alice@example.com", "a.smith@example.com"]

  # A device password: the scanner in the hall logs in as alice with its
  # own password, which may only send, and only from the LAN. Make one with
  #   mailpost hash-password -random
  # (prints a random password once, for the scanner, and this line). If it
  # leaks, it cannot read alice's mail; delete the block and reload to end it.
  device "scanner" {
    password_hash = "$argon2id$v=19$m=65536,t=3,p=2$jM9JY9ORRloSA45YUUMbBg$AvthKsf/X2wgQdq4wqybOJhH+rtnC4mHpmHxvYTEqZM"
    allow         = ["submission"]          # "pop3", "submission"; default: what the mailbox may
    from          = ["192.168.1.0/24"]      # optional; default: any network
    # expires     = "2027-06-30"            # optional; works through that day (UTC)
  }
  # Tell alice (a message in her mailbox) when one of her passwords is
  # used from a network it was not used from before.
  new_login_notice = true
}

mailbox "admin@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  pop3          = false                    # this mailbox may not be opened over POP3
}
