package benchmark_test

import (
	"fmt"
	"os"

	"github.com/meridian-metrics/meridian/broker/benchmark"
)

func ExampleParseMode() {
	for _, s := range []string{"edge", "naive", "raw", "fast"} {
		m, err := benchmark.ParseMode(s)
		fmt.Printf("%q %v\n", m, err)
	}
	// Output:
	// "edge" <nil>
	// "naive" <nil>
	// "raw" <nil>
	// "" unknown mode "fast": want edge, naive or raw
}

// A report prints as a table; modes that were not run show as dashes.
func ExampleReport_WriteTable() {
	rep := &benchmark.Report{
		Subscribers: 100, Intervals: benchmark.IntervalsOne, DurationSeconds: 5, Cores: 2,
		Edge: &benchmark.ModeResult{
			Mode: benchmark.ModeEdge, BytesPerIdleSubscriber: 1300, ColdBytesPerIdleSubscriber: 1500, CPUMicrosPerDelivery: 20,
			DeliveriesPerCore: 50000, TickToWireP50Ms: 1, TickToWireP99Ms: 6, DeliveriesDue: 400, DeliveriesMade: 400,
		},
	}
	_ = rep.WriteTable(os.Stdout)
	// Output:
	// meridian bench: 100 subscribers, intervals 1s, 5s window per mode, 2 cores
	//
	//                                                 edge  baseline  raw loop  baseline/edge  edge/raw
	// RSS per idle subscriber                     1.27 KiB         –         –
	//   of which the binary's pages                    0 B         –         –
	//   over the RSS before any (cold)            1.46 KiB         –         –
	// Go heap per idle subscriber                      0 B         –         –
	//   heap spans / runtime / stacks      0 B / 0 B / 0 B         –         –
	// goroutines per subscriber                       0.00         –         –
	// CPU per delivery                            20.00 µs         –         –
	//   of which in the kernel                          0%         –         –
	// deliveries/s one core sustains                 50000         –         –
	// deliveries/s measured                              0         –         –
	// allocations per delivery                      0.0000         –         –
	//   beyond the idle rate                        0.0000         –         –
	// tick-to-wire p50 / p99                1.00 / 6.00 ms         –         –
	// tick-to-wire p99.9 / max                0.0 / 0.0 ms         –         –
	// t0 error p50 / p99 (add to above)     0.00 / 0.00 ms         –         –
	// snapshot age p50 / p99                      0 / 0 ms         –         –
	// delivered / due                            400 / 400         –         –
	// duplicates, conflations, drops               0, 0, 0         –         –
	// CPU of client / rest of machine    0.00 / 0.00 cores         –         –
	// CPU stolen by the hypervisor              0.00 cores         –         –
}

func ExampleParseNetwork() {
	for _, s := range []string{"auto", "namespace", "host", "bridge"} {
		n, err := benchmark.ParseNetwork(s)
		fmt.Printf("%q %v\n", n, err)
	}
	// Output:
	// "auto" <nil>
	// "namespace" <nil>
	// "host" <nil>
	// "" unknown network "bridge": want auto, namespace or host
}
