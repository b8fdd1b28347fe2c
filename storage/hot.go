package storage

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"
)

// The hot cache keeps the records and manifests most recently used in
// memory, so that the request a fleet sends most — a manifest by tag the
// mirror has fresh — costs no file opens, reads, hashes or JSON decodes.
//
// It holds copies of what the files say, and only ever what this process
// wrote or read and verified: a record is put after its file is written or
// read back, a manifest's bytes after they were hashed to their digest. A
// blob the index drops (evicted, quarantined, gone) leaves it at once, so
// it never serves content the disk cache no longer has. Tag records are
// the one entry the files can change behind it, when another process
// writes the same directory; such a change is seen once this process's
// copy is evicted or replaced, as a TTL cache sees changes once the TTL
// ends.

// DefaultHotSize is the hot cache's default bound, in bytes of entries.
const DefaultHotSize = 32 << 20

// hotEntryOverhead is what an entry costs besides its strings and bytes:
// the LRU's element and map slot, the key and value structs.
const hotEntryOverhead = 192

// hotTouchEvery is how often, at most, a manifest served from memory
// bumps its blob's recency in the index, so that a hot manifest is not
// evicted from disk for looking unused while the index lock is taken at
// most once a second per manifest.
const hotTouchEvery = time.Second

// WithHotSize bounds the in-memory cache of records and manifests to about
// n bytes; 0 turns it off.
func WithHotSize(n int64) Option { return func(s *Store) { s.hot = newHot(n) } }

type hotKind uint8

const (
	hotTag hotKind = iota + 1
	hotManifestRecord
	hotBody
)

type hotKey struct {
	kind hotKind
	repo Repo
	// ref is the tag, or the digest of a manifest record or body.
	ref     string
	variant string
}

type hotEntry struct {
	tag  TagRecord
	man  ManifestRecord
	body []byte
	cost int64
	// touched is when a hit last bumped the blob's recency (unix nanos).
	touched atomic.Int64
}

// hot is a byte-bounded LRU. A nil *hot caches nothing.
type hot struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[hotKey, *hotEntry]
	bytes int64
	max   int64
	// maxBody is the largest manifest kept, so that one big index cannot
	// flush everything else.
	maxBody int64

	hits, misses atomic.Int64
}

func newHot(max int64) *hot {
	if max <= 0 {
		return nil
	}
	// simplelru needs a positive count; the bound that matters is bytes.
	l, _ := simplelru.NewLRU[hotKey, *hotEntry](1<<62, nil)
	return &hot{lru: l, max: max, maxBody: max / 64}
}

func (h *hot) get(k hotKey) (*hotEntry, bool) {
	if h == nil {
		return nil, false
	}
	h.mu.Lock()
	e, ok := h.lru.Get(k)
	h.mu.Unlock()
	if ok {
		h.hits.Add(1)
	} else {
		h.misses.Add(1)
	}
	return e, ok
}

func (h *hot) put(k hotKey, e *hotEntry) {
	if h == nil {
		return
	}
	e.cost = hotEntryOverhead + int64(len(k.repo.Upstream)+len(k.repo.Name)+len(k.ref)+len(k.variant)+
		len(e.tag.MediaType)+len(e.tag.Digest)+len(e.man.MediaType)+len(e.body))
	if k.kind == hotBody && int64(len(e.body)) > h.maxBody {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.lru.Peek(k); ok {
		h.bytes -= old.cost
	}
	h.lru.Add(k, e)
	h.bytes += e.cost
	for h.bytes > h.max {
		_, old, ok := h.lru.RemoveOldest()
		if !ok {
			break
		}
		h.bytes -= old.cost
	}
}

func (h *hot) remove(k hotKey) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.lru.Peek(k); ok {
		h.lru.Remove(k)
		h.bytes -= old.cost
	}
}

// HotStats says what the in-memory cache of records and manifests holds.
type HotStats struct {
	Entries      int
	Bytes, Max   int64
	Hits, Misses int64
}

// HotStats reports the in-memory cache's size and use.
func (s *Store) HotStats() HotStats {
	h := s.hot
	if h == nil {
		return HotStats{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return HotStats{Entries: h.lru.Len(), Bytes: h.bytes, Max: h.max, Hits: h.hits.Load(), Misses: h.misses.Load()}
}

func tagKey(r Repo, tag, variant string) hotKey {
	return hotKey{kind: hotTag, repo: r, ref: tag, variant: variant}
}

func manifestKey(r Repo, dgst digest.Digest) hotKey {
	return hotKey{kind: hotManifestRecord, repo: r, ref: string(dgst)}
}

func bodyKey(dgst digest.Digest) hotKey { return hotKey{kind: hotBody, ref: string(dgst)} }

// hotBody returns a manifest's verified bytes from memory, bumping its
// blob's recency now and then.
func (s *Store) hotBody(dgst digest.Digest) ([]byte, bool) {
	e, ok := s.hot.get(bodyKey(dgst))
	if !ok {
		return nil, false
	}
	now := time.Now().UnixNano()
	if last := e.touched.Load(); now-last >= int64(hotTouchEvery) && e.touched.CompareAndSwap(last, now) {
		if !s.idx.touch(dgst) {
			// The index no longer has the blob: the drop hook is about
			// to remove this entry, or has; do not serve it meanwhile.
			s.hot.remove(bodyKey(dgst))
			return nil, false
		}
	}
	return e.body, true
}

func (s *Store) putHotBody(dgst digest.Digest, b []byte) {
	if s.hot == nil {
		return
	}
	e := &hotEntry{body: b}
	e.touched.Store(time.Now().UnixNano())
	s.hot.put(bodyKey(dgst), e)
	if !s.idx.has(dgst) {
		// Dropped between the read and the put: the drop hook ran before
		// the entry existed.
		s.hot.remove(bodyKey(dgst))
	}
}
