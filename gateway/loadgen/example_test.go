package loadgen_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/meridian-metrics/meridian/gateway/demo"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
)

// Twenty requests against the demo upstream, a quarter of them asking for
// an error.
func ExampleRun() {
	srv := httptest.NewServer(demo.Handler(demo.Config{Latency: demo.Constant(0)}))
	defer srv.Close()
	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Targets:    []string{srv.URL},
		RPS:        1000,
		Requests:   20,
		ErrorRatio: 0.25,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sent", res.Sent, "succeeded", res.Succeeded, "failed", res.Failed,
		"transport errors", res.TransportErrors, "by status", res.ByStatus)
	// Output: sent 20 succeeded 15 failed 5 transport errors 0 by status map[200:15 500:5]
}
