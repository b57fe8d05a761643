hostname = "localhost"

mailbox "root@localhost" {
  quota = "1GiB"
}
