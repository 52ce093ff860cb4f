package demo_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/meridian-metrics/meridian/gateway/demo"
)

// Each request can ask for its status and delay.
func ExampleHandler() {
	h := demo.Handler(demo.Config{})
	for _, target := range []string{"/orders?status=503&delay=0s", "/orders?delay=0s", "/?status=1000"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		fmt.Print(rec.Code, " ", rec.Body.String())
	}
	// Output:
	// 503 {"status":503,"method":"GET","path":"/orders","delay_ns":0}
	// 200 {"status":200,"method":"GET","path":"/orders","delay_ns":0}
	// 400 status 1000 is out of range; want an HTTP status from 100 to 599, e.g. ?status=503
}
