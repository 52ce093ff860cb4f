package service_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNonNegative(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"zero int", service.NonNegative("Workers", 0), ""},
		{"positive duration", service.NonNegative("TTL", time.Second), ""},
		{"negative int", service.NonNegative("Workers", -3), "Workers -3 must not be negative"},
		{"negative duration", service.NonNegative("TTL", -time.Second), "TTL -1s must not be negative"},
	}
	for _, tt := range tests {
		got := ""
		if tt.err != nil {
			got = tt.err.Error()
		}
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestFirst(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	if err := service.First(nil, a, b); err != a {
		t.Errorf("First(nil, a, b) = %v, want a", err)
	}
	if err := service.First(nil, nil); err != nil {
		t.Errorf("First(nil, nil) = %v, want nil", err)
	}
}

func TestIn(t *testing.T) {
	if err := service.In("Rollups", nil); err != nil {
		t.Errorf("In(nil) = %v", err)
	}
	inner := service.NonNegative("MaxAge", -time.Second)
	err := service.In("Rollups", inner)
	if err.Error() != "Rollups: MaxAge -1s must not be negative" || !errors.Is(err, inner) {
		t.Errorf("In = %v", err)
	}
}

func TestDefault(t *testing.T) {
	n, f, d, s := 0, 2.5, time.Duration(0), ""
	service.Default(&n, 7)
	service.Default(&f, 9) // set: kept
	service.Default(&d, time.Second)
	service.Default(&s, "x")
	if n != 7 || f != 2.5 || d != time.Second || s != "x" {
		t.Fatalf("got %v %v %v %q, want 7 2.5 1s \"x\"", n, f, d, s)
	}
}
