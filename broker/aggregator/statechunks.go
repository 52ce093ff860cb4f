package aggregator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// A merge state larger than one NATS message (about 1 KB per instance
// before compression, so past roughly 100,000 instances) is stored in
// chunks. The encoded state is cut into chunks of at most chunkSize bytes
// under keys StateKey.chunk.<writer>.<slot>.<i>, written first; then
// StateKey is compare-and-set to a manifest naming the writer and slot, the
// chunk count, the size and the SHA-256 of the whole. Each writer (an
// aggregator, by a digest of its ID) alternates between two slots, writing
// the one its last manifest does not name, so the keys are overwritten in
// place (the bucket keeps one value per key) rather than piling up, and a
// deposed leader still writing can only touch its own slots, never the
// ones a newer leader's manifest names. A new leader's first write deletes
// the previous writer's chunks. StateKey stays the one compare-and-set
// point, so fencing is unchanged, and a reader never sees a half-written
// state: it follows the manifest to a complete set and checks the digest.
// The chunking does not look inside the encoded state, so whatever the
// state comes to hold per instance (histograms, say) only changes the
// number of chunks. A state that fits into one message is stored directly
// under StateKey, as before chunking existed.

// chunkMagic starts a manifest; neither JSON nor gzip starts with it.
var chunkMagic = []byte("MSTC")

const (
	// maxChunkSize bounds a chunk, below the default 1 MiB NATS payload.
	maxChunkSize = 512 << 10
	// maxChunks bounds a state: with maxChunkSize it is far above
	// maxDecodedState compressed, so it only stops corrupt manifests.
	maxChunks = 1024
)

// stateManifest is StateKey's value when the state is chunked.
type stateManifest struct {
	Gen    string `json:"gen"`
	Chunks int    `json:"chunks"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

func chunkKey(key, gen string, i int) string { return key + ".chunk." + gen + "." + strconv.Itoa(i) }

// stateWriter names an aggregator in chunk keys: a digest of its ID, which
// may hold characters keys do not allow.
func stateWriter(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:6])
}

// nextGen is the slot a writer fills next: the one its last manifest
// (prevGen) does not name.
func nextGen(writer, prevGen string) string {
	if prevGen == writer+".a" {
		return writer + ".b"
	}
	return writer + ".a"
}

// chunkSizeFor is the chunk size for a server whose maximum payload is
// maxPayload, with room for headers.
func chunkSizeFor(maxPayload int64) int {
	return int(max(min(maxPayload-4096, maxChunkSize), 1024))
}

// putState stores data as the merge state, compare-and-set on rev (0: the
// key must not exist yet), chunked when it is larger than chunkSize. writer is
// this aggregator's stateWriter, prevGen the chunk set StateKey named when
// it last read or wrote it. It returns StateKey's new revision and the
// chunk set it now names ("" when unchunked).
func putState(ctx context.Context, kv jetstream.KeyValue, key string, data []byte, rev uint64, chunkSize int, writer, prevGen string) (uint64, string, error) {
	value, gen := data, ""
	if n := chunksFor(len(data), chunkSize); n > 0 {
		if n > maxChunks {
			return 0, "", fmt.Errorf("%d bytes in %d chunks of %d: %w", len(data), n, chunkSize, ErrStateTooLarge)
		}
		gen = nextGen(writer, prevGen)
		for i := range n {
			chunk := data[i*chunkSize : min((i+1)*chunkSize, len(data))]
			if _, err := kv.Put(ctx, chunkKey(key, gen, i), chunk); err != nil {
				return 0, "", fmt.Errorf("write merge state chunk %d of %d: %w", i+1, n, err)
			}
		}
		sum := sha256.Sum256(data)
		m, err := json.Marshal(stateManifest{Gen: gen, Chunks: n, Size: len(data), SHA256: hex.EncodeToString(sum[:])})
		if err != nil {
			return 0, "", fmt.Errorf("encode merge state manifest: %w", err)
		}
		value = append(append([]byte(nil), chunkMagic...), m...)
	}
	newRev, err := kv.Update(ctx, key, value, rev)
	if err != nil {
		return 0, "", err
	}
	if prevGen != "" && !strings.HasPrefix(prevGen, writer+".") {
		// The first write after taking over from another writer: its
		// chunks are nobody's now.
		deleteChunks(ctx, kv, key, prevGen)
	}
	return newRev, gen, nil
}

// chunksFor is the number of chunks putState cuts size bytes into: 0 when
// they fit in one message.
func chunksFor(size, chunkSize int) int {
	if size <= chunkSize {
		return 0
	}
	return (size + chunkSize - 1) / chunkSize
}

// deleteChunks removes another writer's chunk set, best effort: a leftover
// is garbage nobody reads.
func deleteChunks(ctx context.Context, kv jetstream.KeyValue, key, gen string) {
	for i := 0; i < maxChunks; i++ {
		if err := kv.Purge(ctx, chunkKey(key, gen, i)); err != nil {
			return
		}
		if _, err := kv.Get(ctx, chunkKey(key, gen, i+1)); err != nil {
			return
		}
	}
}

// errNoState is returned by getState when nothing is stored.
var errNoState = errors.New("no merge state stored")

// getState reads the merge state's encoded form, following a manifest to
// its chunks, and returns it with StateKey's revision and the generation of
// its chunks. A manifest whose chunks are missing or do not match its size
// or digest is ErrInvalidState (with the revision, so that the caller may
// overwrite it).
func getState(ctx context.Context, kv jetstream.KeyValue, key string) (data []byte, rev uint64, gen string, err error) {
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, "", errNoState
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("read merge state: %w", err)
	}
	rev = entry.Revision()
	m, chunked, err := parseManifest(entry.Value())
	if err != nil {
		return nil, rev, "", err
	}
	if !chunked {
		return entry.Value(), rev, "", nil
	}
	data = make([]byte, 0, m.Size)
	for i := range m.Chunks {
		e, err := kv.Get(ctx, chunkKey(key, m.Gen, i))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, rev, m.Gen, fmt.Errorf("merge state chunk %d of %d is missing: %w", i+1, m.Chunks, ErrInvalidState)
		}
		if err != nil {
			return nil, rev, m.Gen, fmt.Errorf("read merge state chunk %d of %d: %w", i+1, m.Chunks, err)
		}
		if len(data)+len(e.Value()) > m.Size {
			return nil, rev, m.Gen, fmt.Errorf("merge state chunks exceed the manifest's %d bytes: %w", m.Size, ErrInvalidState)
		}
		data = append(data, e.Value()...)
	}
	sum := sha256.Sum256(data)
	if len(data) != m.Size || hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, rev, m.Gen, fmt.Errorf("merge state chunks do not match the manifest (%d of %d bytes): %w", len(data), m.Size, ErrInvalidState)
	}
	return data, rev, m.Gen, nil
}

// parseManifest reads StateKey's value: a manifest (chunked true), or the
// state itself (false). A malformed manifest is ErrInvalidState.
func parseManifest(value []byte) (m stateManifest, chunked bool, err error) {
	rest, ok := bytes.CutPrefix(value, chunkMagic)
	if !ok {
		return m, false, nil
	}
	if err := json.Unmarshal(rest, &m); err != nil {
		return m, true, fmt.Errorf("decode merge state manifest: %v: %w", err, ErrInvalidState)
	}
	if m.Gen == "" || len(m.Gen) > 64 || m.Chunks < 1 || m.Chunks > maxChunks || m.Size < m.Chunks || m.Size > maxChunks*maxChunkSize || len(m.SHA256) != 2*sha256.Size {
		return m, true, fmt.Errorf("merge state manifest %+v is out of range: %w", m, ErrInvalidState)
	}
	return m, true, nil
}
