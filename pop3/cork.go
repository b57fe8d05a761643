package pop3

import (
	"net"
	"sync"
)

// corkConn sits under the TLS layer and, while corked, gathers what TLS
// writes so that a whole response leaves in as few write calls as possible.
// TLS writes one call per 16 KiB record, so without it a 20 KiB message
// costs two writes on the socket and wakes the client twice; with it, one.
// Like TCP_CORK, but without the two extra setsockopt calls per response.
// Uncorked (the default, and always during handshakes) it passes writes
// straight through.
type corkConn struct {
	net.Conn
	corked bool
	buf    *[]byte // pooled while corked
}

// corkFlushAt is the size at which a corked buffer is written out anyway,
// so a 5 MiB message streams in 128 KiB writes instead of being held.
const corkFlushAt = 128 << 10

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkFlushAt+16<<10+1024); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= corkFlushAt {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkConn) cork() {
	if !c.corked {
		c.corked = true
		c.buf = corkBufs.Get().(*[]byte)
	}
}

// uncork writes out what was gathered and returns to pass-through.
func (c *corkConn) uncork() error {
	if !c.corked {
		return nil
	}
	err := c.flush()
	c.corked = false
	*c.buf = (*c.buf)[:0]
	corkBufs.Put(c.buf)
	c.buf = nil
	return err
}

func (c *corkConn) flush() error {
	b := *c.buf
	for len(b) > 0 {
		n, err := c.Conn.Write(b)
		if err != nil {
			*c.buf = (*c.buf)[:0]
			return err
		}
		b = b[n:]
	}
	*c.buf = (*c.buf)[:0]
	return nil
}
