package edge

import (
	"testing"
	"unsafe"
)

// maxConnSize is the malloc size class an idle connection fits in; the
// next one is 192 B. Issue 13 holds the edge to 0.5 KB per idle subscriber
// (about 200 B of it today), so a field that pushes conn over is a choice to
// make in the open: pack it into existing padding, move it behind a pointer
// that is nil while idle (as in, q and work are), or raise this bound and
// say why.
const maxConnSize = 176

func TestConnFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(conn{}); got > maxConnSize {
		t.Fatalf("conn is %d bytes, over the %d-byte size class it is meant to fit", got, maxConnSize)
	}
}
