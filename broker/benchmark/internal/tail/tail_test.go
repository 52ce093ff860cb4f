package tail

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBufferKeepsTheEnd(t *testing.T) {
	w := New(8)
	for _, s := range []string{"abc", "defgh", "ijklmnop", "q"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %q: %d, %v", s, n, err)
		}
	}
	if got := w.String(); got != "jklmnopq" {
		t.Errorf("tail %q, want %q", got, "jklmnopq")
	}
}
