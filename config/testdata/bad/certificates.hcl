hostname = "mail.example.com"

certificate "nothing" {
}

certificate "both" {
  cert_file   = "missing.crt"
  key_file    = "missing.key"
  self_signed = true
}

certificate "half" {
  key_file = "missing.key"
}

certificate "files" {
  cert_file = "missing.crt"
  key_file  = "/nonexistent/mailpost/missing.key"
  names     = ["mail.example.com"]
}

certificate "files" {
  self_signed = true
  names       = ["mail.example.com", "not a name", "*.example.com", "2001:db8::1"]
}

pop3 {
}
