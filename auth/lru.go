package auth

// lru is a bounded map kept in least-recently-touched order. Its nodes live
// in one slice linked by index, so a table of small keys (the Guard's
// uint64 network keys) holds no pointers for the collector to scan and
// costs no allocation per entry once grown. Not safe for concurrent use:
// the Guard holds its mutex around every call.
//
// Index 0 is the sentinel of the circular list: nodes[0].next is the least
// recently touched entry, nodes[0].prev the most recent. An index returned
// by get or put is valid until the next put or remove.
type lru[K comparable, V any] struct {
	max   int
	idx   map[K]int32
	nodes []lruNode[K, V]
	free  int32 // head of the free list (linked by next), 0 when empty
}

type lruNode[K comparable, V any] struct {
	key        K
	val        V
	prev, next int32
}

func (l *lru[K, V]) init(max int) {
	l.max = max
	l.idx = make(map[K]int32)
	l.nodes = make([]lruNode[K, V], 1, 16)
	l.free = 0
}

func (l *lru[K, V]) len() int { return len(l.idx) }

// get returns the index of k's entry, or 0.
func (l *lru[K, V]) get(k K) int32 { return l.idx[k] }

// touch makes i the most recently used entry.
func (l *lru[K, V]) touch(i int32) {
	l.unlink(i)
	l.linkBack(i)
}

// front is the least recently touched entry, or 0 when empty.
func (l *lru[K, V]) front() int32 { return l.nodes[0].next }

// put inserts k (which must not be present) as the most recent entry. When
// the table is full the least recent entry goes first; it is returned with
// evicted set so the caller can account for it.
func (l *lru[K, V]) put(k K, v V) (i int32, old lruNode[K, V], evicted bool) {
	if len(l.idx) >= l.max {
		f := l.front()
		old, evicted = l.nodes[f], true
		l.remove(f)
	}
	if l.free != 0 {
		i = l.free
		l.free = l.nodes[i].next
	} else {
		l.nodes = append(l.nodes, lruNode[K, V]{})
		i = int32(len(l.nodes) - 1)
	}
	l.nodes[i] = lruNode[K, V]{key: k, val: v}
	l.linkBack(i)
	l.idx[k] = i
	return i, old, evicted
}

// remove drops entry i; its slot is reused by the next put.
func (l *lru[K, V]) remove(i int32) {
	l.unlink(i)
	delete(l.idx, l.nodes[i].key)
	l.nodes[i] = lruNode[K, V]{next: l.free} // drop references the key or value held
	l.free = i
}

func (l *lru[K, V]) unlink(i int32) {
	n := &l.nodes[i]
	l.nodes[n.prev].next = n.next
	l.nodes[n.next].prev = n.prev
}

func (l *lru[K, V]) linkBack(i int32) {
	last := l.nodes[0].prev
	l.nodes[i].prev, l.nodes[i].next = last, 0
	l.nodes[last].next = i
	l.nodes[0].prev = i
}
