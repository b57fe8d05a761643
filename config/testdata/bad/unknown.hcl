# Keys and types HCL itself rejects.
hostname = "mail.example.com"
hostnme  = "typo.example.com"
domains  = "example.com"
data_dir = var.state

certificate "dev" {
  self_signed = "yes please"
  colour      = "blue"
}

smtp {
  listen = ["0.0.0.0:587"]
}

pop3 {
  banner          = join(" ", ["a", "b"])
  max_connections = true
}

pop3 {
}
