# mailpost quickstart: everything on high ports on loopback, a self-signed
# certificate, data kept next to this file in ./data. Start it with
#
#   go run . serve -config examples/quickstart.hcl
#
# and read the demo mailbox (user demo@example.com, password demo-password):
#
#   curl -k -u demo@example.com:demo-password pop3s://127.0.0.1:10995/
#
# Relative paths in this file are relative to the directory holding it.

hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]

# Generated on first start and kept in data/mailpost.db; clients will warn
# about it (curl needs -k). Use cert_file/key_file or ACME for real use.
certificate "quickstart" {
  self_signed = true
}

pop3 {
  ssl_bindings                 = ["127.0.0.1:10995"]   # implicit TLS (POP3S)
  unencrypted_or_tls_bindings  = ["127.0.0.1:10110"]   # plain text, upgraded with STLS
  external_connection_settings = ["mail.example.com:10995:ssl", "mail.example.com:10110:tls"]
}

# Send with any mail client, or:
#
#   curl -k --mail-from demo@example.com --mail-rcpt demo@example.com \
#        -u demo@example.com:demo-password -T examples/welcome.eml smtps://127.0.0.1:10465/
#
# AUTH is accepted only over TLS. No inbound block here: port 25 needs root.
submission {
  ssl_bindings                 = ["127.0.0.1:10465"]   # implicit TLS (SMTPS)
  unencrypted_or_tls_bindings  = ["127.0.0.1:10587"]   # plain text, upgraded with STARTTLS
  external_connection_settings = ["mail.example.com:10465:ssl", "mail.example.com:10587:tls"]
}

# The password is "demo-password". Make your own hash with
#   go run . hash-password
mailbox "demo@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  aliases       = ["postmaster@example.com"]
}
