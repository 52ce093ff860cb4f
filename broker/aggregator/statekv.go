package aggregator

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// Where the merge state and the leader lease live.
const (
	// StateBucket is the key-value bucket holding the leader's merge state
	// under StateKey, rewritten every second.
	StateBucket = "MERIDIAN_STATE"
	StateKey    = "merge"
	// LeaseBucket is the key-value bucket of the aggregators' leader lease,
	// under LeaseKey.
	LeaseBucket = "MERIDIAN_LEADER"
	LeaseKey    = "aggregator"
)

const (
	// compressAbove: an encoded state larger than this is gzipped. Below it
	// the JSON stays readable with `nats kv get`; above it gzip shrinks the
	// ~1 KB per instance about tenfold (the samples and names repeat).
	compressAbove = 16 << 10
	// maxDecodedState bounds a decompressed state, so that a corrupt or
	// hostile value cannot exhaust memory: 256 MB is about 250,000 instances.
	maxDecodedState = 256 << 20
)

// gzipMagic starts every gzip stream; JSON never starts with it.
var gzipMagic = []byte{0x1f, 0x8b}

// ErrStateTooLarge means the encoded merge state does not fit even into
// maxChunks chunks, so it cannot be persisted; failover and restarts then
// lose what the persisted state would have carried.
var ErrStateTooLarge = errors.New("merge state is larger than the NATS maximum payload")

// EncodeState returns the persisted form of s: its JSON, gzipped when that
// is larger than 16 KB.
func EncodeState(s *State) ([]byte, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode merge state: %w", err)
	}
	if len(data) <= compressAbove {
		return data, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data) / 8)
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("encode merge state: %w", err)
	}
	if _, err := zw.Write(data); err != nil {
		return nil, fmt.Errorf("compress merge state: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress merge state: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeState parses what EncodeState wrote (gzipped or not) and checks the
// state's invariants; errors wrap ErrInvalidState.
func DecodeState(data []byte) (State, error) {
	var s State
	if bytes.HasPrefix(data, gzipMagic) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return s, fmt.Errorf("decode merge state: gzip: %v: %w", err, ErrInvalidState)
		}
		plain, err := io.ReadAll(io.LimitReader(zr, maxDecodedState+1))
		if err != nil {
			return s, fmt.Errorf("decode merge state: gunzip: %v: %w", err, ErrInvalidState)
		}
		if len(plain) > maxDecodedState {
			return s, fmt.Errorf("decode merge state: more than %d bytes decompressed: %w", maxDecodedState, ErrInvalidState)
		}
		data = plain
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("decode merge state: %v: %w", err, ErrInvalidState)
	}
	if err := validateState(&s); err != nil {
		return State{}, err
	}
	return s, nil
}

// openStateBucket opens StateBucket, creating it when it is missing.
func openStateBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, StateBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      StateBucket,
			Description: "Meridian aggregator merge state",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, StateBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open state bucket %s: %w", StateBucket, err)
	}
	return kv, nil
}
