hostname = "mail.example.com"

certificate "dev" {
  self_signed = true
  names       = ["mail.example.com", "*.lan.example.com"]
}

pop3 {
  ssl_bindings                = ["0.0.0.0:995"]
  unencrypted_or_tls_bindings = []
}

# Submission: the listener rules are POP3's, but AUTH needs TLS, so an
# unencrypted connection setting can never be right.
submission {
  x509_certificate_name        = "smtp.example.org"
  ssl_bindings                 = ["[::]:465", "0.0.0.0:995", "smtp.example.com:465"]
  unencrypted_or_tls_bindings  = ["[::]:587"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587", "mail.example.com:2587:tls", "smtp.example.net:465:ssl"]
  internal_connection_settings = ["smtp.lan.example.com:587:tls", "smtp.office.example.com:587:tls"]
  max_message_size             = "35 megs"
  max_recipients               = 0
  timeout                      = "30s"
  max_connections              = 500
  max_connections_per_ip       = 1000
  login_type                   = "plain_text_login"
}

submission {
}
