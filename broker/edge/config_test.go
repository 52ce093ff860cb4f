//go:build linux

package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
)

// A negative setting is a mistake New reports, not a silent default: an
// edge told "-1s" for a timeout must not run with 75s.
func TestNewRejectsNegativeSettings(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartCore(t)
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"idle timeout", func(c *Config) { c.IdleTimeout = -time.Second }, "IdleTimeout -1s must not be negative"},
		{"history points", func(c *Config) { c.HistoryPoints = -1 }, "HistoryPoints -1 must not be negative"},
		{"history workers", func(c *Config) { c.HistoryWorkers = -2 }, "HistoryWorkers -2 must not be negative"},
		{"pending bytes", func(c *Config) { c.MaxPendingBytes = -1 }, "MaxPendingBytes -1 must not be negative"},
		{"write timeout", func(c *Config) { c.WriteTimeout = -1 }, "WriteTimeout -1ns must not be negative"},
		{"follow grace", func(c *Config) { c.FollowGrace = -time.Second }, "FollowGrace -1s must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{NATS: nc, Listen: "127.0.0.1:0"}
			tt.modify(&cfg)
			e, err := New(cfg)
			if err == nil {
				_ = e.Shutdown(t.Context())
				t.Fatal("New accepted a negative setting")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.withDefaults()
	if c.Listen != DefaultListen || c.IdleTimeout != DefaultIdleTimeout || c.HistoryPoints != DefaultHistoryPoints ||
		c.MaxPendingBytes != DefaultMaxPendingBytes || c.Namespace != DefaultNamespace || c.FollowGrace != DefaultFollowGrace {
		t.Fatalf("zero Config did not take the documented defaults: %+v", c)
	}
	if c := (Config{IdleTimeout: 100 * 365 * 24 * time.Hour * 2}).withDefaults(); c.IdleTimeout != maxInterval {
		t.Fatalf("IdleTimeout not capped: %v", c.IdleTimeout)
	}
}
