package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/meridian-metrics/meridian/broker/dashboard"
)

// The dashboard shares the edge's port: mount it on the mux given to
// edge.Config.HTTP, next to the history API it reads.
func Example() {
	mux := http.NewServeMux()
	dashboard.New().Mount(mux)
	// mux.Handle("GET /api/metrics/", historyAPI)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output: 200 text/html; charset=utf-8
}
