package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// checkpointVersion is the version of the checkpoint file this build writes.
const checkpointVersion = 1

// maxCheckpointSize bounds what loadCheckpoint reads: a real one is ~1 KiB.
const maxCheckpointSize = 1 << 20

// Checkpoint is what a collector persists before every report it publishes:
// the boot and sequence it publishes under, the cumulative counters of that
// report, and the source's position that produced exactly those counters.
// A collector restarted from it resumes the same boot with the same counters
// at the same position, so it neither loses nor double counts a request; and
// because it is written before the report is sent, no published report is
// ever ahead of it.
type Checkpoint struct {
	Version   int            `json:"v"`
	Region    string         `json:"region"`
	Instance  string         `json:"instance"`
	BootID    string         `json:"boot_id"`
	Seq       uint64         `json:"seq"`
	StartTime time.Time      `json:"start_time"`
	Counters  proto.Counters `json:"counters"`
	// Source is the source's own state (a log position, the last scraped
	// values), in the source's format.
	Source json.RawMessage `json:"source,omitempty"`
}

// loadCheckpoint reads the checkpoint at path; a missing file is (nil, nil).
// Temporary files a collector killed while saving left beside it are
// removed.
func loadCheckpoint(path string) (*Checkpoint, error) {
	if stale, err := filepath.Glob(path + ".tmp-*"); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	defer f.Close()
	var cp Checkpoint
	dec := json.NewDecoder(&limitedReader{f: f, n: maxCheckpointSize})
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	if cp.Version != checkpointVersion {
		return nil, fmt.Errorf("read checkpoint %s: version %d, this build reads %d", path, cp.Version, checkpointVersion)
	}
	if cp.BootID == "" || cp.Seq == 0 {
		return nil, fmt.Errorf("read checkpoint %s: no boot id or sequence", path)
	}
	if len(cp.Counters.LatencyBuckets) != proto.NumLatencyBuckets ||
		cp.Counters.RequestsSuccess+cp.Counters.RequestsError != cp.Counters.RequestsTotal {
		return nil, fmt.Errorf("read checkpoint %s: counters are inconsistent", path)
	}
	return &cp, nil
}

type limitedReader struct {
	f *os.File
	n int64
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("checkpoint is larger than 1 MiB")
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.f.Read(p)
	r.n -= int64(n)
	return n, err
}

// saveCheckpoint replaces the checkpoint at path atomically and durably:
// write a temporary file beside it, fsync it, rename it over the old one and
// fsync the directory. A crash at any moment leaves either the old or the
// new checkpoint, whole.
func saveCheckpoint(path string, cp *Checkpoint) error {
	cp.Version = checkpointVersion
	data, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace checkpoint: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync checkpoint directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint directory: %w", err)
	}
	return nil
}

// addCounters returns base plus c: what a resumed boot reports when base was
// checkpointed and c has been counted since. The gauge is c's.
func addCounters(base, c proto.Counters) proto.Counters {
	out := proto.Counters{
		RequestsTotal:     base.RequestsTotal + c.RequestsTotal,
		RequestsSuccess:   base.RequestsSuccess + c.RequestsSuccess,
		RequestsError:     base.RequestsError + c.RequestsError,
		DurationSumNanos:  base.DurationSumNanos + c.DurationSumNanos,
		DurationCount:     base.DurationCount + c.DurationCount,
		LatencyBuckets:    make([]uint64, proto.NumLatencyBuckets),
		ActiveConnections: c.ActiveConnections,
	}
	for i := range out.LatencyBuckets {
		if i < len(base.LatencyBuckets) {
			out.LatencyBuckets[i] += base.LatencyBuckets[i]
		}
		if i < len(c.LatencyBuckets) {
			out.LatencyBuckets[i] += c.LatencyBuckets[i]
		}
	}
	return out
}
