hostname = "mail.example.com"
domains  = ["example.com"]

certificate {
  self_signed = true
}

mailbox "a@example.com" "b@example.com" {
}

pop3 "extra" {
}
