hostname = "mail.example.com"
pop3 {
  banner = "unterminated
}
