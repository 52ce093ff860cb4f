package collector

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxStatusPage bounds the stub_status page read (a real one is ~100 bytes).
const maxStatusPage = 4 << 10

// StubStatusActive reads requests in flight from nginx's stub_status page:
// Reading + Writing, less the one connection writing this very request. (Its
// "Active connections" also counts idle keep-alive connections, which are
// not requests in flight.)
func StubStatusActive(client *http.Client, url string) ActiveFunc {
	return func(ctx context.Context) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, fmt.Errorf("read stub_status: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("read stub_status: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("read stub_status %s: status %d", url, resp.StatusCode)
		}
		return parseStubStatus(io.LimitReader(resp.Body, maxStatusPage))
	}
}

// parseStubStatus reads Reading and Writing from a stub_status page.
func parseStubStatus(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[0] != "Reading:" || f[2] != "Writing:" {
			continue
		}
		reading, err1 := strconv.ParseInt(f[1], 10, 64)
		writing, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || reading < 0 || writing < 0 {
			return 0, fmt.Errorf("parse stub_status: bad line %q", sc.Text())
		}
		return max(reading+writing-1, 0), nil
	}
	return 0, fmt.Errorf("parse stub_status: no Reading/Writing line")
}
