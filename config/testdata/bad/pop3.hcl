hostname = "mail.example.com"

certificate "dev" {
  self_signed = true
  names       = ["mail.example.com", "*.lan.example.com"]
}

pop3 {
  ssl_bindings                 = ["[::]:995", "0.0.0.0:995", "localhost:995", "::1:995"]
  unencrypted_or_tls_bindings  = ["0.0.0.0:995", "127.0.0.1:99999"]
  external_connection_settings = ["mail.example.com:995:SSL", "mail.example.com:1995:ssl", "mail.example.com:110:", "webmail.example.com:995:ssl", "mail.example.com:995:smtps"]
  internal_connection_settings = ["pop.lan.example.com:995:ssl", "pop.office.example.com:995:ssl"]
  login_type                   = "secure_login"
  pre_authenticated_timeout    = "1 minute"
  authenticated_timeout        = "2m"
  max_connections              = 0
  max_connections_per_ip       = 20
  max_command_size             = 128
  banner                       = "line one\nline two"
}
