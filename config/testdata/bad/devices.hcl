hostname = "mail.example.com"
domains  = ["example.com"]

login_limits {
  ipv4_32 = -1
  account = 2000000
  window  = "0s"
  exempt_after_success = "1y"
}

login_limits {
}

mailbox "alice@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  retention     = "36h"
  sort_order    = "newest"
  submission    = false

  device "scanner" {
    password_hash = "$argon2id$v=19$m=65536,t=3,p=2$tEASAH8AEQjKkgZ8ItsAhA$NZlU6f0TZd9ePJuRZIebfIhbUvtKQZyV60zBUBnRWao"
    allow         = ["smtp", "submission", "submission"]
    from          = ["192.168.1.7/24", "10.0.0.0/8", "fe80::1%eth0"]
    expires       = "30 June 2027"
  }
  device "Scanner" {
    password_hash = "$argon2id$v=19$m=65536,t=3,p=2$tEASAH8AEQjKkgZ8ItsAhA$NZlU6f0TZd9ePJuRZIebfIhbUvtKQZyV60zBUBnRWao"
  }
  device "bad name!" {
    password_hash = "not a hash"
    allow         = []
    from          = []
  }
  device "nohash" {
  }
  device "old" {
    password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
    expires       = "2020-01-31"
  }
}

mailbox "bob@example.com" {
  password_hash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"
  retention     = "forever"
}
