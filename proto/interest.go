package proto

import (
	"encoding/json"
	"fmt"
	"time"
)

// InterestSubject is where edges announce the instance scopes their clients
// follow. Aggregators publish an instance's snapshots every second only
// while some edge's interest in it is current (see Interest), so that the
// cost of instance scopes follows the subscribers, not the number of
// instances.
const InterestSubject = "meridian.interest"

// InterestVersion is the Interest message version.
const InterestVersion = 1

// Interest limits: MaxInterestInstances names per message (an edge following
// more sends several), a TTL from MinInterestTTL to MaxInterestTTL.
const (
	MaxInterestInstances = 4096
	MinInterestTTL       = time.Second
	MaxInterestTTL       = 5 * time.Minute
	maxInterestSize      = MaxInterestInstances*(maxTokenLen+3) + 1024
)

// Interest is an edge's announcement that its clients follow Instances: the
// aggregators publish those instances' snapshots until TTL after they
// received it. Edges repeat it well within the TTL while the interest
// lasts, and simply stop when it ends.
type Interest struct {
	Version   int           `json:"v"`
	Edge      string        `json:"edge"` // who is interested, for logs
	Instances []string      `json:"instances"`
	TTL       time.Duration `json:"ttl_ns"`
}

// Validate checks the message's invariants.
func (in *Interest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid interest: "+format+": %w", append(args, ErrMalformed)...)
	}
	if in.Version != InterestVersion {
		return fmt.Errorf("invalid interest: version %d: %w", in.Version, ErrUnsupportedVersion)
	}
	if err := ValidateToken("edge", in.Edge); err != nil {
		return bad("%v", err)
	}
	if len(in.Instances) > MaxInterestInstances {
		return bad("%d instances, at most %d per message", len(in.Instances), MaxInterestInstances)
	}
	for _, inst := range in.Instances {
		if err := ValidateToken("instance", inst); err != nil {
			return bad("%v", err)
		}
	}
	if in.TTL < MinInterestTTL || in.TTL > MaxInterestTTL {
		return bad("ttl_ns %s, want %s to %s", in.TTL, MinInterestTTL, MaxInterestTTL)
	}
	return nil
}

// Encode validates and encodes the message.
func (in *Interest) Encode() ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(in)
}

// DecodeInterest decodes and validates an Interest message.
func DecodeInterest(data []byte) (Interest, error) {
	return decodeVersioned[Interest]("interest", data, maxInterestSize, InterestVersion)
}
