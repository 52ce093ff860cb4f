package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/aggregator"
)

// StateEntry is one merge state as stored in aggregator.StateBucket: the
// single tier's under aggregator.StateKey, each shard's and the cluster
// tier's under keys of their own.
type StateEntry struct {
	Key string `json:"key"`
	// Bytes is the stored state's size (the manifest's size when chunked).
	Bytes int `json:"bytes"`
	// Chunks is how many chunks it is stored in; 0 means one message.
	Chunks int `json:"chunks"`
}

// stateManifestMagic starts a chunked state's manifest (the aggregator's
// statechunks.go, which does not export it or a chunk-count metric): the
// harness reads the stored state from outside, as an operator would.
var stateManifestMagic = []byte("MSTC")

// chunkInfix separates a state key from its chunks' keys.
const chunkInfix = ".chunk."

var errBadManifest = errors.New("malformed merge state manifest")

// parseStateValue reads the value of a state key: a manifest (size and
// chunk count) or the state itself.
func parseStateValue(v []byte) (size, chunks int, err error) {
	rest, ok := bytes.CutPrefix(v, stateManifestMagic)
	if !ok {
		return len(v), 0, nil
	}
	var m struct {
		Chunks int `json:"chunks"`
		Size   int `json:"size"`
	}
	if err := json.Unmarshal(rest, &m); err != nil {
		return 0, 0, fmt.Errorf("%w: %v", errBadManifest, err)
	}
	if m.Chunks < 1 || m.Size < m.Chunks {
		return 0, 0, fmt.Errorf("%w: %d chunks of %d bytes", errBadManifest, m.Chunks, m.Size)
	}
	return m.Size, m.Chunks, nil
}

// readState lists every merge state in the state bucket.
func readState(ctx context.Context, js jetstream.JetStream) ([]StateEntry, error) {
	kv, err := js.KeyValue(ctx, aggregator.StateBucket)
	if err != nil {
		return nil, fmt.Errorf("open merge state bucket: %w", err)
	}
	all, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("list merge states: %w", err)
	}
	keys := slices.DeleteFunc(all, func(k string) bool { return strings.Contains(k, chunkInfix) })
	slices.Sort(keys)
	keys = slices.Compact(keys) // a listing may repeat a key being written
	out := make([]StateEntry, 0, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("read merge state %s: %w", k, err)
		}
		size, chunks, err := parseStateValue(e.Value())
		if err != nil {
			return nil, fmt.Errorf("read merge state %s: %w", k, err)
		}
		out = append(out, StateEntry{Key: k, Bytes: size, Chunks: chunks})
	}
	return out, nil
}
