package edge

import (
	"testing"
	"unsafe"
)

// maxConnSize is the malloc size class an idle connection fits in; the
// next one is 224 B. Issue 13 holds the edge to 0.5 KB per idle subscriber
// (about 230 B of it today), so a field that pushes conn over is a choice to
// make in the open: pack it into existing padding, move it behind a pointer
// that is nil while idle (as in, q and work are), or raise this bound and
// say why. It was 176 B before the admission fields (lim, rate, grant,
// expires: 32 B).
const maxConnSize = 208

func TestConnFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(conn{}); got > maxConnSize {
		t.Fatalf("conn is %d bytes, over the %d-byte size class it is meant to fit", got, maxConnSize)
	}
}
