package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"
)

// Limits bounds the cache's size. When the content in the cache grows past
// High bytes, least recently used blobs are removed until it is at most Low.
// MaxSize 0 means unbounded.
type Limits struct {
	MaxSize int64
	High    int64
	Low     int64
}

// index is the in-memory view of verified content: sizes, mtimes,
// recency, which blobs this process has verified, which are being read,
// and which manifests reference which blobs. It is rebuilt from disk at
// start.
type index struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[digest.Digest, *entry]
	total int64
	// unverified counts the entries (and their bytes) whose content this
	// process has not hashed yet.
	unverified, unverifiedBytes int64
	pins                        map[digest.Digest]int
	// referrers maps a blob to the manifests that reference it, so that a
	// manifest is removed with any blob it needs: a client must never get
	// a cached manifest whose blobs are gone.
	referrers map[digest.Digest]map[digest.Digest]struct{}

	evictions int64
	evicting  bool

	// onDrop is called, under mu, for every blob the index stops knowing:
	// the hot cache must not outlive the disk's copy.
	onDrop func(digest.Digest)
}

// entry is what the index knows of one blob file.
type entry struct {
	size int64
	// mtime is the file's as this process last saw or set it: a file whose
	// mtime differs was touched by something else and is hashed again.
	mtime time.Time
	// touched is when this process last bumped the mtime, to keep recency
	// across restarts without a syscall on every hit.
	touched time.Time
	// verified: this process hashed the content, or wrote it through an
	// Ingest that did.
	verified bool
}

func newIndex() *index {
	// simplelru requires a positive size; the size bound is ours, in bytes.
	l, _ := simplelru.NewLRU[digest.Digest, *entry](1<<62, nil)
	return &index{
		lru:       l,
		pins:      map[digest.Digest]int{},
		referrers: map[digest.Digest]map[digest.Digest]struct{}{},
	}
}

// add records a blob file, replacing what was known of d.
func (x *index) add(d digest.Digest, size int64, mtime time.Time, verified bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropLocked(d)
	e := &entry{size: size, mtime: mtime, verified: verified}
	x.lru.Add(d, e)
	x.total += size
	x.countLocked(e, 1)
}

// countLocked adds e to (sign 1) or takes it from (-1) the unverified
// counts.
func (x *index) countLocked(e *entry, sign int64) {
	if !e.verified {
		x.unverified += sign
		x.unverifiedBytes += sign * e.size
	}
}

// dropLocked removes d's entry, if any, and reports whether there was one.
func (x *index) dropLocked(d digest.Digest) bool {
	e, ok := x.lru.Peek(d)
	if !ok {
		return false
	}
	x.lru.Remove(d)
	x.total -= e.size
	x.countLocked(e, -1)
	if x.onDrop != nil {
		x.onDrop(d)
	}
	return true
}

// touch marks d as just used and reports whether the index knows it.
func (x *index) touch(d digest.Digest) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.lru.Get(d)
	return ok
}

// has reports whether the index knows d.
func (x *index) has(d digest.Digest) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.lru.Contains(d)
}

// forget drops d: its file is gone or quarantined.
func (x *index) forget(d digest.Digest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.dropLocked(d) {
		delete(x.referrers, d)
	}
}

// verdict is what opening a blob file found against the index.
type verdict int

const (
	// trusted: verified by this process, size and mtime unchanged.
	trusted verdict = iota
	// unhashed: not verified since start, or touched since; hash first.
	unhashed
	// wrongSize: the file's size is not the one recorded: corrupt.
	wrongSize
)

// check compares the open file f at path p with d's entry and marks d as
// just used. A blob the index does not know (written by another process,
// restored from a backup) is added, unverified. Every hour of use it bumps
// the file's mtime, so that recency survives a restart, and records the
// new mtime; it does so under the lock so that a concurrent open never
// sees a file newer than its entry.
func (x *index) check(d digest.Digest, p string, f *os.File, fi os.FileInfo) verdict {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.lru.Get(d)
	if !ok {
		e = &entry{size: fi.Size(), mtime: fi.ModTime()}
		x.lru.Add(d, e)
		x.total += e.size
		x.countLocked(e, 1)
		return unhashed
	}
	if fi.Size() != e.size {
		return wrongSize
	}
	if !fi.ModTime().Equal(e.mtime) {
		x.countLocked(e, -1)
		e.mtime, e.verified = fi.ModTime(), false
		x.countLocked(e, 1)
		return unhashed
	}
	if !e.verified {
		return unhashed
	}
	if now := time.Now(); now.Sub(e.touched) >= time.Hour {
		e.touched = now
		if os.Chtimes(p, now, now) == nil {
			if fi, err := f.Stat(); err == nil {
				e.mtime = fi.ModTime()
			}
		}
	}
	return trusted
}

// markVerified records that d's content hashed right, if its file is still
// the one hashed (same size and mtime).
func (x *index) markVerified(d digest.Digest, size int64, mtime time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.lru.Peek(d)
	if !ok || e.verified || e.size != size || !e.mtime.Equal(mtime) {
		return
	}
	x.countLocked(e, -1)
	e.verified = true
}

// verified reports whether d's entry is verified.
func (x *index) verified(d digest.Digest) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.lru.Peek(d)
	return ok && e.verified
}

// unhashedBlobs lists the entries not verified yet, oldest first.
func (x *index) unhashedBlobs() []digest.Digest {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []digest.Digest
	for _, d := range x.lru.Keys() {
		if e, _ := x.lru.Peek(d); !e.verified {
			out = append(out, d)
		}
	}
	return out
}

func (x *index) pin(d digest.Digest) {
	x.mu.Lock()
	x.pins[d]++
	x.mu.Unlock()
}

func (x *index) unpin(d digest.Digest) {
	x.mu.Lock()
	if x.pins[d]--; x.pins[d] <= 0 {
		delete(x.pins, d)
	}
	x.mu.Unlock()
}

func (x *index) addReferences(manifest digest.Digest, blobs []digest.Digest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, b := range blobs {
		set := x.referrers[b]
		if set == nil {
			set = map[digest.Digest]struct{}{}
			x.referrers[b] = set
		}
		set[manifest] = struct{}{}
	}
}

// Usage is the cache's size as the index sees it.
type Usage struct {
	Bytes     int64
	Entries   int
	Evictions int64
	Limits    Limits
}

// Usage returns the cache's current size and limits.
func (s *Store) Usage() Usage {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	return Usage{Bytes: s.idx.total, Entries: s.idx.lru.Len(), Evictions: s.idx.evictions, Limits: s.limits}
}

// RecordReferences tells the index which blobs a manifest needs.
func (s *Store) RecordReferences(manifest digest.Digest, blobs []digest.Digest) {
	s.idx.addReferences(manifest, blobs)
}

// maybeEvict starts an eviction run when the cache is over its high mark.
func (s *Store) maybeEvict() {
	if s.limits.MaxSize <= 0 {
		return
	}
	s.idx.mu.Lock()
	if s.idx.total <= s.limits.High || s.idx.evicting {
		s.idx.mu.Unlock()
		return
	}
	s.idx.evicting = true
	s.idx.mu.Unlock()
	s.evict()
}

// evict removes least recently used blobs, with the manifests that need
// them, until the cache is at its low mark. Pinned blobs (being read) are
// passed over.
func (s *Store) evict() {
	x := s.idx
	var victims []digest.Digest
	x.mu.Lock()
	keys := x.lru.Keys() // oldest first
	if len(keys) > 0 {
		// The newest entry was just added for a client that is about to
		// read it; even a blob larger than the low mark stays until the
		// next one arrives.
		keys = keys[:len(keys)-1]
	}
	for _, d := range keys {
		if x.total <= s.limits.Low {
			break
		}
		if x.pins[d] > 0 {
			continue
		}
		doomed := []digest.Digest{d}
		for m := range x.referrers[d] {
			if x.pins[m] == 0 {
				doomed = append(doomed, m)
			}
		}
		for _, v := range doomed {
			if !x.dropLocked(v) {
				continue
			}
			x.evictions++
			delete(x.referrers, v)
			victims = append(victims, v)
		}
	}
	x.evicting = false
	x.mu.Unlock()
	// Remove the files outside the lock: an open reader keeps its data
	// (the inode lives until closed); new requests see a miss and fetch.
	for _, v := range victims {
		if p, err := s.blobPath(v); err == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log(fmt.Sprintf("evict %s: %v", v, err))
			}
		}
	}
	if len(victims) > 0 {
		s.log(fmt.Sprintf("evicted %d entries", len(victims)))
	}
}

// ScanStats says what the start-up scan found.
type ScanStats struct {
	Blobs, Manifests int
	Bytes            int64
	// Removed counts records that pointed at nothing and were deleted.
	Removed  int
	Duration time.Duration
}

// scan rebuilds the index from disk: every verified blob with its size and
// mtime (recency), and the references of every manifest some repository
// records. Records whose content is gone are removed.
func (s *Store) scan() (ScanStats, error) {
	start := time.Now()
	var st ScanStats
	type entry struct {
		d     digest.Digest
		size  int64
		mtime time.Time
	}
	var entries []entry
	blobsDir := filepath.Join(s.root, "blobs")
	err := filepath.WalkDir(blobsDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(blobsDir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 3 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if d.Validate() != nil || parts[1] != parts[2][:2] {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		entries = append(entries, entry{d, fi.Size(), fi.ModTime()})
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("scan cache: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].mtime.Before(entries[j].mtime) })
	present := make(map[digest.Digest]bool, len(entries))
	for _, e := range entries {
		// Not verified: nothing says the file is what it was when it
		// was written. The first open, or the scrub, hashes it.
		s.idx.add(e.d, e.size, e.mtime, false)
		present[e.d] = true
		st.Blobs++
		st.Bytes += e.size
	}

	// Manifest records: learn references; drop records (and links and
	// tags) that point at content no longer here.
	manifests := map[digest.Digest]bool{}
	reposDir := filepath.Join(s.root, "repos")
	err = filepath.WalkDir(reposDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		rel := filepath.ToSlash(p)
		switch {
		case strings.Contains(rel, "/_manifests/"):
			alg, hex := filepath.Base(filepath.Dir(p)), filepath.Base(p)
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			if !present[d] {
				os.Remove(p)
				st.Removed++
				return nil
			}
			manifests[d] = true
		case strings.Contains(rel, "/_links/"):
			// A link only matters while its blob is here; a fetch for the
			// repository is authorised by the upstream anyway.
			alg, hex := filepath.Base(filepath.Dir(p)), filepath.Base(p)
			if !present[digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)] {
				os.Remove(p)
				st.Removed++
			}
		case strings.Contains(rel, "/_tags/"):
			var rec TagRecord
			if readJSON(p, &rec) != nil || !present[rec.Digest] {
				os.Remove(p)
				st.Removed++
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("scan cache records: %w", err)
	}
	for d := range manifests {
		body, err := s.ReadBlob(d)
		if err != nil {
			continue
		}
		s.idx.addReferences(d, ReferencedBlobs(body))
		st.Manifests++
	}
	st.Duration = time.Since(start)
	return st, nil
}

// ReferencedBlobs lists the blobs (not child manifests) a manifest names:
// config and layers of OCI and Docker schema 2 manifests, blobs of OCI
// artifacts, fsLayers of Docker schema 1.
func ReferencedBlobs(body []byte) []digest.Digest {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		Config   *desc  `json:"config"`
		Layers   []desc `json:"layers"`
		Blobs    []desc `json:"blobs"`
		FSLayers []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []digest.Digest
	add := func(d digest.Digest) {
		if d.Validate() == nil {
			out = append(out, d)
		}
	}
	if m.Config != nil {
		add(m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(l.Digest)
	}
	for _, b := range m.Blobs {
		add(b.Digest)
	}
	for _, l := range m.FSLayers {
		add(l.BlobSum)
	}
	return out
}
