package storage

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func login(mailbox, device, ip, proto string, t time.Time) LoginEvent {
	return LoginEvent{Mailbox: mailbox, Login: Login{Time: t, IP: ip, Proto: proto, Device: device}}
}

// A store written by the first release holds logins/<mailbox> records in
// the original layout; they read as the main password's last use.
func TestOldFormatLoginReads(t *testing.T) {
	s := openTest(t)
	t0 := time.Date(2026, 2, 1, 9, 30, 0, 7, time.UTC)
	// time(12) = unix seconds(8) + nanoseconds(4), len(proto)(1), proto, ip
	old := make([]byte, 12, 64)
	binary.BigEndian.PutUint64(old[0:8], uint64(t0.Unix()))
	binary.BigEndian.PutUint32(old[8:12], uint32(t0.Nanosecond()))
	old = append(old, 4)
	old = append(old, "pop3"...)
	old = append(old, "192.0.2.7"...)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("logins"))
		if err != nil {
			return err
		}
		return b.Put([]byte("alice@example.com"), old)
	})
	if err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	st, err := s.MailboxStats()
	if err != nil {
		t.Fatal(err)
	}
	want := Login{Time: t0, IP: "192.0.2.7", Proto: "pop3"}
	if len(st) != 1 || st[0].MainLogin == nil || *st[0].MainLogin != want || st[0].LastLogin == nil || *st[0].LastLogin != want || st[0].Devices != nil {
		t.Fatalf("stats = %+v", st)
	}
	// A newer main-password login replaces it in the same place, in the
	// same layout, so an older build still reads it.
	t1 := t0.Add(time.Hour)
	s.RecordLogin(login("alice@example.com", "", "192.0.2.8", "submission", t1))
	if err := s.FlushLogins(); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte("logins")).Get([]byte("alice@example.com"))
		if l, ok := decodeLogin(v); !ok || !l.Time.Equal(t1) || l.IP != "192.0.2.8" || l.Proto != "submission" {
			t.Errorf("rewritten record %x = %+v", v, l)
		}
		return nil
	})
}

func TestLastUsePerCredential(t *testing.T) {
	s := openTest(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.RecordLogin(login("alice@example.com", "", "192.0.2.1", "pop3", t0))
	s.RecordLogin(login("alice@example.com", "scanner", "192.168.1.20", "submission", t0.Add(time.Minute)))
	s.RecordLogin(login("alice@example.com", "helpdesk", "2001:db8::5", "pop3", t0.Add(-time.Minute)))
	// Late, older: ignored.
	s.RecordLogin(login("alice@example.com", "scanner", "192.168.1.99", "submission", t0))

	check := func(when string) {
		t.Helper()
		st, err := s.MailboxStats()
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 {
			t.Fatalf("%s: %+v", when, st)
		}
		a := st[0]
		if a.MainLogin == nil || a.MainLogin.IP != "192.0.2.1" || a.MainLogin.Proto != "pop3" || a.MainLogin.Device != "" {
			t.Errorf("%s: main = %+v", when, a.MainLogin)
		}
		if sc := a.Devices["scanner"]; sc.IP != "192.168.1.20" || sc.Proto != "submission" || !sc.Time.Equal(t0.Add(time.Minute)) || sc.Device != "scanner" {
			t.Errorf("%s: scanner = %+v", when, sc)
		}
		if hd := a.Devices["helpdesk"]; hd.IP != "2001:db8::5" || hd.Proto != "pop3" {
			t.Errorf("%s: helpdesk = %+v", when, hd)
		}
		if len(a.Devices) != 2 {
			t.Errorf("%s: devices = %+v", when, a.Devices)
		}
		if a.LastLogin == nil || a.LastLogin.Device != "scanner" {
			t.Errorf("%s: newest login = %+v", when, a.LastLogin)
		}
	}
	check("pending")
	if err := s.FlushLogins(); err != nil {
		t.Fatal(err)
	}
	check("flushed")
	s = reopen(t, s)
	check("reopened")
}

func TestNetworksPerCredential(t *testing.T) {
	s := openTest(t)
	now := time.Now()
	rec := func(device, network string) NetworkSeen {
		t.Helper()
		ev := login("alice@example.com", device, "192.0.2.1", "pop3", now)
		ev.Network, ev.CheckNetwork = network, true
		seen, err := s.RecordLogin(ev)
		if err != nil {
			t.Fatal(err)
		}
		return seen
	}
	steps := []struct {
		device, network string
		flush           bool
		want            NetworkSeen
	}{
		{"", "192.0.2.0/24", false, NetworkSeen{New: true, First: true}},
		{"", "192.0.2.0/24", false, NetworkSeen{}},
		{"", "198.51.100.0/24", true, NetworkSeen{New: true}},
		{"", "192.0.2.0/24", false, NetworkSeen{}},
		// Another credential of the same mailbox has its own networks.
		{"scanner", "192.0.2.0/24", true, NetworkSeen{New: true, First: true}},
		{"scanner", "192.0.2.0/24", false, NetworkSeen{}},
		{"", "198.51.100.0/24", false, NetworkSeen{}},
	}
	for i, st := range steps {
		if got := rec(st.device, st.network); got != st.want {
			t.Errorf("step %d (%q from %s): %+v, want %+v", i, st.device, st.network, got, st.want)
		}
		if st.flush {
			if err := s.FlushLogins(); err != nil {
				t.Fatal(err)
			}
		}
	}
	s = reopen(t, s)
	if got := rec("scanner", "192.0.2.0/24"); got != (NetworkSeen{}) {
		t.Errorf("after reopen: %+v", got)
	}
	// Least recently used goes first: 198.51.100.0/24 was touched last
	// above for the main password, so after MaxSeenNetworks-1 new ones it
	// is still known, and 192.0.2.0/24 is forgotten.
	for i := range MaxSeenNetworks - 1 {
		if got := rec("", fmt.Sprintf("10.0.%d.0/24", i)); !got.New {
			t.Fatalf("network %d: %+v", i, got)
		}
		if i%10 == 0 {
			s.FlushLogins()
		}
	}
	if got := rec("", "198.51.100.0/24"); got.New {
		t.Errorf("a recently used network was forgotten: %+v", got)
	}
	if got := rec("", "192.0.2.0/24"); !got.New || got.First {
		t.Errorf("the least recently used network should be forgotten: %+v", got)
	}
	if err := s.FlushLogins(); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		r := readCred(tx, credKey{"alice@example.com", ""})
		if len(r.nets) != MaxSeenNetworks || r.nets[len(r.nets)-1] != "192.0.2.0/24" || r.last != nil {
			t.Errorf("stored main record: %d networks %v, login %v", len(r.nets), r.nets, r.last)
		}
		return nil
	})
	// Not asked: no answer, but remembered.
	ev := login("alice@example.com", "helpdesk", "192.0.2.1", "pop3", now)
	ev.Network = "203.0.113.0/24"
	if got, err := s.RecordLogin(ev); err != nil || got != (NetworkSeen{}) {
		t.Errorf("unchecked: %+v %v", got, err)
	}
	if got := rec("helpdesk", "203.0.113.0/24"); got.New {
		t.Errorf("an unchecked login's network was not remembered: %+v", got)
	}
}

// Logins racing each other and the flush: each network is new exactly
// once, also while a flush is between taking the batch and committing it.
func TestNewNetworkOnceUnderConcurrency(t *testing.T) {
	s := openTest(t)
	stop := make(chan struct{})
	var flusher sync.WaitGroup
	flusher.Add(1)
	go func() {
		defer flusher.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.FlushLogins()
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	const networks, racers = 100, 4
	for n := range networks {
		var wg sync.WaitGroup
		var mu sync.Mutex
		news := 0
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev := login("alice@example.com", "", "192.0.2.1", "pop3", time.Now())
				ev.Network, ev.CheckNetwork = fmt.Sprintf("10.%d.%d.0/24", n/256, n%256), true
				seen, err := s.RecordLogin(ev)
				if err != nil {
					t.Error(err)
				}
				if seen.New {
					mu.Lock()
					news++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if news != 1 {
			t.Errorf("network %d was new %d times", n, news)
		}
	}
	close(stop)
	flusher.Wait()
}

func TestCredentialRecordCorruptIgnored(t *testing.T) {
	l := Login{Time: normTime(time.Now()), IP: "::1", Proto: "pop3"}
	good := encodeCred(credRecord{last: &l, nets: []string{"::/64", "192.0.2.0/24"}})
	r, ok := decodeCred(good)
	if !ok || r.last == nil || *r.last != l || len(r.nets) != 2 || r.nets[1] != "192.0.2.0/24" {
		t.Fatalf("round trip: %+v %v", r, ok)
	}
	if r, ok := decodeCred(encodeCred(credRecord{nets: []string{"x"}})); !ok || r.last != nil || len(r.nets) != 1 {
		t.Errorf("without login: %+v %v", r, ok)
	}
	for _, v := range [][]byte{nil, {2}, {1}, {1, 200}, {1, 0}, {1, 0, 3, 1, 'x'}, good[:len(good)-1], {1, 5, 1, 2, 3, 4, 5, 0}} {
		if r, ok := decodeCred(v); ok {
			t.Errorf("decodeCred(%x) accepted: %+v", v, r)
		}
	}
}

// BenchmarkRecordLoginCheckNetwork is a login into a mailbox with
// new_login_notice: the network is looked up (memory, else one read
// transaction) under the login lock. Known networks, as in steady state.
func BenchmarkRecordLoginCheckNetwork(b *testing.B) {
	s := openTest(b)
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("user%d@example.com", i)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.RecordLogin(LoginEvent{Mailbox: names[i%len(names)], Login: Login{IP: "192.0.2.1", Proto: "pop3", Time: time.Now()},
				Network: "192.0.2.0/24", CheckNetwork: true})
			i++
		}
	})
}
