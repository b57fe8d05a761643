hostname = "mail.example.com"
domains  = ["example.com", "Example.COM", "bad_domain"]

mailbox "alice@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  aliases       = ["ali@example.com", "ali@example.com", "ali@example.org"]
  quota         = "lots"
}

mailbox "Alice@Example.com" {
  password_hash = "md5:5f4dcc3b5aa765d61d8327deb882cf99"
}

mailbox "not-an-address" {
}

mailbox "bob@example.com" {
  pop3       = "no"
  submission = false
  aliases    = ["alice@example.com"]
}
