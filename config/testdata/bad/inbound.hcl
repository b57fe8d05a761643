hostname = "mail.example.com"

# No domains: inbound would have nothing to receive mail for.

certificate "dev" {
  self_signed = true
}

submission {
  unencrypted_or_tls_bindings = ["0.0.0.0:25"]
}

inbound {
  bindings               = ["0.0.0.0:25", "[::]:2525", "mx.example.com:25"]
  x509_certificate_name  = "mx.example.org"
  max_message_size       = "2GiB"
  max_recipients         = 10001
  timeout                = "0"
  max_connections        = 100
  rate_limit_per_ip      = -5
}
