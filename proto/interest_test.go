package proto

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestInterestRoundTripAndRejections(t *testing.T) {
	good := Interest{Version: InterestVersion, Edge: "edge-1", Instances: []string{"gw-1", "gw-2"}, TTL: 10 * time.Second}
	data, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeInterest(data)
	if err != nil || got.Edge != "edge-1" || len(got.Instances) != 2 || got.TTL != 10*time.Second {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	many := make([]string, MaxInterestInstances+1)
	for i := range many {
		many[i] = "gw"
	}
	tests := []struct {
		name  string
		spoil func(*Interest)
		want  string
		is    error
	}{
		{"version", func(in *Interest) { in.Version = 2 }, "version 2", ErrUnsupportedVersion},
		{"no edge", func(in *Interest) { in.Edge = "" }, "edge is empty", ErrMalformed},
		{"bad instance", func(in *Interest) { in.Instances = []string{"a.b"} }, `instance "a.b"`, ErrMalformed},
		{"too many", func(in *Interest) { in.Instances = many }, "at most 4096", ErrMalformed},
		{"short ttl", func(in *Interest) { in.TTL = time.Millisecond }, "ttl_ns 1ms", ErrMalformed},
		{"long ttl", func(in *Interest) { in.TTL = time.Hour }, "ttl_ns 1h0m0s", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := good
			tc.spoil(&in)
			if _, err := in.Encode(); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode: %v, want %v naming %q", err, tc.is, tc.want)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"v":1}`, `{"v":1,"edge":"e","instances":["x y"],"ttl_ns":1000000000}`, strings.Repeat(" ", maxInterestSize+1)} {
		if _, err := DecodeInterest([]byte(bad)); err == nil {
			t.Errorf("DecodeInterest(%.40q) accepted", bad)
		}
	}
}

func FuzzDecodeInterest(f *testing.F) {
	f.Add([]byte(`{"v":1,"edge":"e","instances":["gw-1"],"ttl_ns":10000000000}`))
	f.Add([]byte(`{"v":1,"edge":"e","instances":[],"ttl_ns":1000000000}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeInterest(data)
		if err != nil {
			return
		}
		// Whatever decodes is valid and encodes again.
		if _, err := in.Encode(); err != nil {
			t.Fatalf("decoded %+v does not encode: %v", in, err)
		}
	})
}
