hostname = "mail.example.com"

# POP3 with the default bindings but no certificate: refused, since
# ssl_bindings cannot work and STLS would have nothing to offer.
pop3 {
  login_type = "plain_text_login"
}
