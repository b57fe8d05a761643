hostname = "mail.example.com"
domains  = ["example.com"]

mailbox "alice@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  aliases       = ["a.smith@example.com"]
  # An outside address and other people's addresses are allowed, with a
  # warning each; a malformed one is an error.
  send_as       = ["alice@example.com", "alice@personal.example", "bob@example.com", "bobby@example.com", "alice", "Alice@Example.com"]
}

mailbox "bob@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  aliases       = ["bobby@example.com"]
  send_as       = []
}

mailbox "carol@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  send_as       = "carol@example.com"
}
