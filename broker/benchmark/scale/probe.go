package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meridian-metrics/meridian/proto"
)

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	return b, nil
}

// varz is the part of the NATS server's /varz the report uses.
type varz struct {
	InMsgs   int64 `json:"in_msgs"`
	OutMsgs  int64 `json:"out_msgs"`
	InBytes  int64 `json:"in_bytes"`
	OutBytes int64 `json:"out_bytes"`
	SlowCons int64 `json:"slow_consumers"`
}

func readVarz(ctx context.Context, monitor string) (varz, error) {
	b, err := httpGet(ctx, "http://"+monitor+"/varz")
	if err != nil {
		return varz{}, fmt.Errorf("read NATS varz: %w", err)
	}
	var v varz
	if err := json.Unmarshal(b, &v); err != nil {
		return varz{}, fmt.Errorf("read NATS varz: %w", err)
	}
	return v, nil
}

// readMetaLeader is the JetStream meta leader a NATS node knows ("" while
// none is elected), from its /jsz.
func readMetaLeader(ctx context.Context, monitor string) (string, error) {
	b, err := httpGet(ctx, "http://"+monitor+"/jsz")
	if err != nil {
		return "", fmt.Errorf("read NATS jsz: %w", err)
	}
	var j struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return "", fmt.Errorf("read NATS jsz: %w", err)
	}
	if j.Meta == nil {
		return "", nil
	}
	return j.Meta.Leader, nil
}

// streamBytes is the size of the history stream.
func streamBytes(ctx context.Context, js jetstream.JetStream) (msgs, bytes uint64, err error) {
	s, err := js.Stream(ctx, proto.HistoryStream)
	if err != nil {
		return 0, 0, fmt.Errorf("read history stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read history stream: %w", err)
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// scrape reads a child's /metrics as name → summed value of its samples
// (counters and gauges; a histogram gives its sample count).
func scrape(ctx context.Context, admin string) (map[string]float64, error) {
	b, err := httpGet(ctx, "http://"+admin+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", admin, err)
	}
	out := make(map[string]float64, len(fams))
	for name, f := range fams {
		var v float64
		for _, m := range f.GetMetric() {
			v += sampleValue(f.GetType(), m)
		}
		out[name] = v
	}
	return out, nil
}

func sampleValue(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// machine is the host's steal time and load at one moment.
type machine struct {
	Total, Steal time.Duration
	Load1        float64
}

func readMachine() (machine, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machine{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return machine{}, fmt.Errorf("parse /proc/stat: first line %q", line)
	}
	var m machine
	tick := time.Second / userHZ
	// user nice system idle iowait irq softirq steal [guest guest_nice,
	// already in user].
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return machine{}, fmt.Errorf("parse /proc/stat: %w", err)
		}
		m.Total += time.Duration(v) * tick
		if i == 7 {
			m.Steal = time.Duration(v) * tick
		}
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := bytes.Fields(la); len(f) > 0 {
			m.Load1, _ = strconv.ParseFloat(string(f[0]), 64)
		}
	}
	return m, nil
}
