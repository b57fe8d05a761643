package main

// The container proof. No Docker engine runs here, so this builds what the
// Dockerfile builds (a CGO_ENABLED=0 static binary), lays out a root holding
// only what the Dockerfile copies into its scratch image, and runs the binary
// chrooted there as uid/gid 65532 with the config read-only and /data the one
// writable place. A POP3 client on loopback then reads a delivered message.

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailpost/server"
)

// containerUID is the Dockerfile's USER.
const containerUID = 65532

// buildStatic builds the binary the way the Dockerfile does.
func buildStatic(t *testing.T, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A dynamically linked binary names its loader in PT_INTERP; in a
	// scratch image there would be none to run it.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the CGO_ENABLED=0 binary is dynamically linked")
		}
	}
}

// vmRSS reads a process's resident set from /proc, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

func TestContainerImageContents(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MAILPOST_REQUIRE_CLIENTS") != "" {
			t.Fatal("the container test needs root (chroot and a uid switch)")
		}
		t.Skip("needs root for chroot and the uid switch (CI runs as root)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mkdir := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, data string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly the Dockerfile's COPY lines, plus the read-only mount.
	mkdir(".", 0o755)
	buildStatic(t, filepath.Join(root, "mailpost"))
	mkdir("etc/ssl/certs", 0o755)
	if b, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		write("etc/ssl/certs/ca-certificates.crt", string(b), 0o644)
	}
	write("etc/passwd", "mailpost:x:65532:65532:mailpost:/data:/nonexistent\n", 0o644)
	write("etc/group", "mailpost:x:65532:\n", 0o644)
	mkdir("data", 0o700)
	if err := os.Chown(filepath.Join(root, "data"), containerUID, containerUID); err != nil {
		t.Fatal(err)
	}
	// The config mount: root-owned and read-only; the key readable by the
	// service's group only, as a secret mount would be.
	mkdir("etc/mailpost", 0o755)
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	cert, _ := os.ReadFile(certFile)
	key, _ := os.ReadFile(keyFile)
	write("etc/mailpost/fullchain.pem", string(cert), 0o444)
	write("etc/mailpost/privkey.pem", string(key), 0o440)
	if err := os.Chown(filepath.Join(root, "etc/mailpost/privkey.pem"), 0, containerUID); err != nil {
		t.Fatal(err)
	}
	popPort, subPort := freeTCPPort(t), freeTCPPort(t)
	cfg := fmt.Sprintf(`hostname = "mail.example.com"
data_dir = "/data"
domains  = ["example.com"]
certificate "main" {
  cert_file = "/etc/mailpost/fullchain.pem"
  key_file  = "/etc/mailpost/privkey.pem"
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:%d"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}
submission {
  ssl_bindings                 = ["127.0.0.1:%d"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["mail.example.com:465:ssl"]
}
mailbox "alice@example.com" {
  password_hash = %q
}
`, popPort, subPort, demoHash)
	write("etc/mailpost/mailpost.hcl", cfg, 0o444)
	os.Chmod(filepath.Join(root, "etc/mailpost"), 0o555)

	// Run it as the image would: chrooted, uid/gid 65532, no
	// supplementary groups, the image's environment only.
	cmd := &exec.Cmd{
		Path: "/mailpost", // resolved inside the chroot
		Args: []string{"/mailpost", "serve", "-config", "/etc/mailpost/mailpost.hcl"},
		Env:  []string{"HOME=/data"},
		Dir:  "/",
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:     root,
			Credential: &syscall.Credential{Uid: containerUID, Gid: containerUID, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	// The control socket is in /data; the test (root, outside) reaches
	// it there as `docker exec mailpost /mailpost ...` would inside.
	in := startCmd(t, cmd, filepath.Join(root, "data"))
	client := server.NewClient(filepath.Join(root, "data"))
	pid := cmd.Process.Pid
	if uid := procUID(t, pid); uid != "65532 65532 65532 65532" {
		t.Errorf("the server runs with uids %q, want 65532 throughout", uid)
	}
	// Idle: started, listening, no session yet. Give the runtime a moment
	// to settle after start-up.
	time.Sleep(time.Second)
	idle := vmRSS(t, pid)

	const msg = "From: bob@example.net\r\nTo: alice@example.com\r\nSubject: from the container\r\n\r\nhello from scratch\r\n"
	if _, err := client.Deliver("alice@example.com", strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	msgs, err := popFetchAll(fmt.Sprintf("127.0.0.1:%d", popPort), caPool(t, caFile), "alice@example.com")
	if err != nil {
		t.Fatalf("POP3 against the chrooted server: %v", err)
	}
	if len(msgs) != 1 || msgs[0] != msg {
		t.Fatalf("read %q, want the one delivered message", msgs)
	}
	afterLogin := vmRSS(t, pid)

	// What it wrote is in /data and belongs to the service user; the
	// config directory is as it was.
	db := filepath.Join(root, "data", "mailpost.db")
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != containerUID || fi.Mode().Perm() != 0o600 {
		t.Errorf("mailpost.db owned by %d with mode %v, want %d and 0600", st.Uid, fi.Mode().Perm(), containerUID)
	}
	// Nothing but /data was written: the config directory (root-owned
	// 0555 with 0444/0440 files, so read-only to uid 65532) is as it was.
	ents, _ := os.ReadDir(filepath.Join(root, "etc/mailpost"))
	if len(ents) != 3 {
		t.Errorf("the read-only config dir now holds %d entries", len(ents))
	}
	in.stop()

	bin, _ := os.Stat(filepath.Join(root, "mailpost"))
	t.Logf("static binary: %.1f MiB (%d bytes); idle RSS %.1f MiB; RSS after one login %.1f MiB (argon2id m=64 MiB)",
		float64(bin.Size())/(1<<20), bin.Size(), float64(idle)/(1<<20), float64(afterLogin)/(1<<20))
	if idle >= 25<<20 {
		t.Errorf("idle RSS %.1f MiB, target < 25 MiB", float64(idle)/(1<<20))
	}
}
