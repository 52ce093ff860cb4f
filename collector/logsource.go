package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for zero LogConfig fields.
const (
	DefaultPollInterval = 200 * time.Millisecond
	// DefaultRotateWait is how long a file replaced at the log's path keeps
	// being read after it last grew: gateways keep writing to the renamed
	// file until they reopen their log (nginx USR1, a reload), and each
	// worker process reopens in its own time.
	DefaultRotateWait = 5 * time.Second
	// DefaultMaxLineBytes bounds one line; a longer one is skipped and
	// counted as unparseable, so memory stays bounded.
	DefaultMaxLineBytes = 64 << 10
)

// headBytes is how much of a file's start identifies it: a truncated file
// that grew back past the read offset is recognised by its new first bytes.
const headBytes = 64

// Recorder counts requests read from a source. gateway.Recorder is the one
// Meridian uses, so collected requests go through exactly the histogram and
// classification the gateway's own traffic does.
type Recorder interface {
	// Record counts one finished request.
	Record(status int, d time.Duration)
	// Counters reads what has been recorded.
	Counters() proto.Counters
}

// LogConfig configures a LogSource. Zero fields take the documented defaults.
type LogConfig struct {
	// Path is the access log. It need not exist yet. Required.
	Path string
	// Parser reads its lines. Required.
	Parser LineParser
	// Recorder counts the parsed requests; it must be fresh (empty).
	// Required.
	Recorder Recorder
	// PollInterval is how often the file is checked for new lines, rotation
	// and truncation. Default DefaultPollInterval.
	PollInterval time.Duration
	// RotateWait: see DefaultRotateWait. Default DefaultRotateWait.
	RotateWait time.Duration
	// MaxLineBytes: see DefaultMaxLineBytes.
	MaxLineBytes int
	// FromStart counts the lines already in the file when the collector
	// first starts (no checkpoint). By default counting starts at the end,
	// so a collector added beside a running gateway does not count history.
	FromStart bool
	// Logger receives rotation notices and, at a bounded rate, unparseable
	// lines. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for RotateWait and log rate limits. Default time.Now.
	Now func() time.Time
}

// logPosition is the LogSource's checkpoint state: which file (device and
// inode, and its first bytes) and how far into it every line is counted.
type logPosition struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Offset int64  `json:"offset"`
	Head   []byte `json:"head,omitempty"`
}

// LogSource tails one access log and counts each line as a request. It
// follows the log through rotation by rename (the renamed file is read to
// its end, then the new one from its start) and by copytruncate (the copy is
// read from where reading stopped, then the truncated file from its start),
// and its position can be checkpointed and resumed.
//
// Concurrency: Run tails on the calling goroutine; Read and the stats may be
// called concurrently with it. Restore must be called before Run.
type LogSource struct {
	cfg LogConfig
	log *slog.Logger

	mu       sync.Mutex // held while lines are counted and the position moves
	base     proto.Counters
	pos      logPosition
	restored bool

	// Owned by Run's goroutine.
	f          *os.File
	pending    []byte // bytes after pos.Offset that do not end a line yet
	skipping   bool   // discarding an over-long line up to its newline
	rotatedAt  time.Time
	lastGrowth time.Time
	buf        []byte

	stats    LineStats
	badLines *rateLimitedLog
}

// Validate reports the first value in c that no default repairs.
func (c LogConfig) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("path is required")
	case c.Parser == nil || c.Recorder == nil:
		return errors.New("parser and recorder are required")
	case c.PollInterval < 0 || c.RotateWait < 0 || c.MaxLineBytes < 0:
		return errors.New("poll interval, rotate wait and max line bytes must not be negative")
	}
	return nil
}

// withDefaults fills zero fields; call it after Validate.
func (c LogConfig) withDefaults() LogConfig {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.RotateWait == 0 {
		c.RotateWait = DefaultRotateWait
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// NewLogSource validates cfg and builds a LogSource.
func NewLogSource(cfg LogConfig) (*LogSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new log source: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("source", "log", "path", cfg.Path)
	return &LogSource{
		cfg:      cfg,
		log:      log,
		base:     proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
		buf:      make([]byte, 64<<10),
		badLines: newRateLimitedLog(log, cfg.Now, DefaultBadLineLogEvery),
	}, nil
}

// Stats returns the source's line counts.
func (s *LogSource) Stats() *LineStats { return &s.stats }

// Restore resumes from a checkpoint: counters counted before it and the
// position they were counted up to.
func (s *LogSource) Restore(counters proto.Counters, state json.RawMessage) error {
	var pos logPosition
	if err := json.Unmarshal(state, &pos); err != nil {
		return fmt.Errorf("restore log position: %w", err)
	}
	if pos.Offset < 0 {
		return fmt.Errorf("restore log position: offset %d is negative", pos.Offset)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = counters
	s.base.ActiveConnections = 0
	s.pos = pos
	s.restored = true
	return nil
}

// Read returns the counters and, read together with them, the position they
// were counted up to.
func (s *LogSource) Read() (proto.Counters, json.RawMessage) {
	s.mu.Lock()
	c := addCounters(s.base, s.cfg.Recorder.Counters())
	pos := s.pos
	s.mu.Unlock()
	state, _ := json.Marshal(pos) // plain struct: cannot fail
	return c, state
}

// Run tails the log until ctx ends, then returns nil. Problems with the file
// (missing, unreadable) are logged and retried every PollInterval.
func (s *LogSource) Run(ctx context.Context) error {
	defer func() {
		if s.f != nil {
			s.f.Close()
		}
	}()
	ticker := time.NewTicker(s.cfg.PollInterval)
	defer ticker.Stop()
	var lastErr string
	for {
		err := s.step()
		switch {
		case err != nil && err.Error() != lastErr:
			s.log.Warn("tailing the access log", "err", err)
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// step reads what is new, then looks for rotation and truncation.
func (s *LogSource) step() error {
	if s.f == nil {
		if err := s.open(); err != nil || s.f == nil {
			return err
		}
	}
	grew, err := s.readAvailable(s.f)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	if grew {
		s.lastGrowth = now
	}
	fi, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("stat open log: %w", err)
	}
	if s.truncated(fi) {
		s.stats.Rotations.Add(1)
		s.log.Info("access log truncated (copytruncate); reading the rest from its copy, then from the start")
		s.recoverCopy()
		s.restart(fi, 0)
		return nil
	}
	s.refreshHead(fi)
	cur, err := os.Stat(s.cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // renamed, the new one not created yet: keep reading the old
	}
	if err != nil {
		return fmt.Errorf("stat access log: %w", err)
	}
	if os.SameFile(cur, fi) {
		s.rotatedAt = time.Time{}
		return nil
	}
	if s.rotatedAt.IsZero() {
		s.rotatedAt = now
	}
	quietSince := s.rotatedAt
	if s.lastGrowth.After(quietSince) {
		quietSince = s.lastGrowth
	}
	if now.Sub(quietSince) < s.cfg.RotateWait {
		return nil
	}
	// The renamed file has been quiet for RotateWait since the new one
	// appeared: the gateway writes to the new one now.
	s.stats.Rotations.Add(1)
	s.log.Info("access log rotated by rename; reading the new file from its start")
	if len(s.pending) > 0 {
		s.badLine(s.pending, errors.New("the rotated file ends without a newline"))
	}
	s.f.Close()
	s.f = nil
	s.rotatedAt = time.Time{}
	return s.openCurrent(0)
}

// open opens the file to read at start: the checkpointed file and offset
// (found by identity even if it was rotated meanwhile), or the current file
// at its end (or start, with FromStart).
func (s *LogSource) open() error {
	s.mu.Lock()
	restored, pos := s.restored, s.pos
	s.restored = false
	s.mu.Unlock()
	if !restored {
		st, err := os.Stat(s.cfg.Path)
		if errors.Is(err, fs.ErrNotExist) {
			// Created later: everything in it is new.
			s.cfg.FromStart = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("stat access log: %w", err)
		}
		if s.cfg.FromStart {
			return s.openCurrent(0)
		}
		if err := s.openCurrent(st.Size()); err != nil {
			return err
		}
		// Starting mid-file: skip to the end of the line we landed in.
		if st.Size() > 0 {
			var last [1]byte
			if _, err := s.f.ReadAt(last[:], st.Size()-1); err == nil && last[0] != '\n' {
				s.skipping = true
			}
		}
		return nil
	}
	cur, err := os.Stat(s.cfg.Path)
	if err == nil && identity(cur) == [2]uint64{pos.Dev, pos.Ino} {
		f, err := os.Open(s.cfg.Path)
		if err != nil {
			return fmt.Errorf("open access log: %w", err)
		}
		s.f = f
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat access log: %w", err)
		}
		if s.truncated(fi) {
			s.log.Info("access log was truncated while the collector was down; reading the rest from its copy")
			s.recoverCopy()
			s.restart(fi, 0)
		}
		return nil
	}
	// Rotated while we were down: finish the checkpointed file first.
	if old := s.findByIdentity(pos); old != "" {
		f, err := os.Open(old)
		if err != nil {
			return fmt.Errorf("open rotated access log: %w", err)
		}
		s.f = f
		s.log.Info("access log was rotated while the collector was down; finishing the rotated file", "rotated", old)
		return nil
	}
	s.stats.Lost.Add(1)
	s.log.Warn("the checkpointed access log is gone (rotated and removed or compressed); lines written to it after the checkpoint are lost")
	return s.openCurrent(0)
}

// openCurrent opens the file at the log's path to read from offset.
func (s *LogSource) openCurrent(offset int64) error {
	f, err := os.Open(s.cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open access log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat access log: %w", err)
	}
	s.f = f
	s.restart(fi, offset)
	return nil
}

// restart points the position at offset in the open file fi.
func (s *LogSource) restart(fi os.FileInfo, offset int64) {
	id := identity(fi)
	s.mu.Lock()
	s.pos = logPosition{Dev: id[0], Ino: id[1], Offset: offset}
	s.mu.Unlock()
	s.pending = s.pending[:0]
	s.skipping = false
	s.refreshHead(fi)
}

// truncated reports whether the open file was truncated under us: it is
// shorter than what was read, or its first bytes changed (it was truncated
// and grew back past the offset between two polls).
func (s *LogSource) truncated(fi os.FileInfo) bool {
	s.mu.Lock()
	pos := s.pos
	s.mu.Unlock()
	if fi.Size() < pos.Offset+int64(len(s.pending)) {
		return true
	}
	return len(pos.Head) > 0 && !s.headIs(s.f, pos.Head)
}

func (s *LogSource) headIs(f *os.File, head []byte) bool {
	got := make([]byte, len(head))
	n, _ := f.ReadAt(got, 0)
	return bytes.Equal(got[:n], head)
}

// refreshHead records the file's first bytes once it has them.
func (s *LogSource) refreshHead(fi os.FileInfo) {
	s.mu.Lock()
	have := len(s.pos.Head)
	s.mu.Unlock()
	if have >= headBytes || fi.Size() <= int64(have) {
		return
	}
	head := make([]byte, min(fi.Size(), headBytes))
	n, _ := s.f.ReadAt(head, 0)
	s.mu.Lock()
	s.pos.Head = head[:n]
	s.mu.Unlock()
}

// recoverCopy reads, from the copy copytruncate made, the lines after the
// position that were written before the truncation. The copy is a file in
// the log's directory whose name starts with the log's, not compressed,
// with the same first bytes and at least as long as the position.
func (s *LogSource) recoverCopy() {
	s.mu.Lock()
	pos := s.pos
	s.mu.Unlock()
	dir, base := filepath.Split(s.cfg.Path)
	entries, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		s.log.Warn("looking for the copy of a truncated access log", "err", err)
		return
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		name := e.Name()
		if name == base || !strings.HasPrefix(name, base) || isCompressed(name) || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := e.Info()
		if err != nil || fi.Size() < pos.Offset {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		ok := len(pos.Head) > 0 && s.headIs(f, pos.Head)
		f.Close()
		if ok && fi.ModTime().After(bestTime) {
			best, bestTime = p, fi.ModTime()
		}
	}
	if best == "" {
		if pos.Offset > 0 {
			s.log.Info("no uncompressed copy of the truncated access log found; lines written after the last read and before the truncation, if any, are not counted")
		}
		return
	}
	f, err := os.Open(best)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := s.readAvailable(f); err != nil {
		s.log.Warn("reading the copy of a truncated access log", "copy", best, "err", err)
	}
	if len(s.pending) > 0 {
		s.badLine(s.pending, errors.New("the copy ends without a newline"))
	}
}

func isCompressed(name string) bool {
	for _, ext := range []string{".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// findByIdentity returns the file in the log's directory with pos's device
// and inode and first bytes, or "".
func (s *LogSource) findByIdentity(pos logPosition) string {
	dir := filepath.Dir(s.cfg.Path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || identity(fi) != [2]uint64{pos.Dev, pos.Ino} {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		ok := s.headIs(f, pos.Head)
		f.Close()
		if ok {
			return p
		}
	}
	return ""
}

func identity(fi os.FileInfo) [2]uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return [2]uint64{uint64(st.Dev), st.Ino}
	}
	return [2]uint64{}
}

// readAvailable reads f from the position to its current end and counts
// every complete line. It reports whether anything was read.
func (s *LogSource) readAvailable(f *os.File) (bool, error) {
	grew := false
	for {
		s.mu.Lock()
		off := s.pos.Offset + int64(len(s.pending))
		s.mu.Unlock()
		n, err := f.ReadAt(s.buf, off)
		if n > 0 {
			grew = true
			s.consume(s.buf[:n])
		}
		if err == io.EOF || n == 0 {
			return grew, nil
		}
		if err != nil {
			return grew, fmt.Errorf("read access log: %w", err)
		}
	}
}

// consume counts the complete lines in pending+chunk and moves the position
// past them, under the lock, so Read sees counters and position agree.
func (s *LogSource) consume(chunk []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := chunk
	if len(s.pending) > 0 {
		s.pending = append(s.pending, chunk...)
		data = s.pending
	}
	for {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		line := data[:nl]
		data = data[nl+1:]
		s.pos.Offset += int64(nl + 1)
		if s.skipping {
			s.skipping = false
			continue
		}
		s.countLine(line)
	}
	if len(data) > s.cfg.MaxLineBytes {
		// Over-long: count it once, drop it, and skip to its newline.
		if !s.skipping {
			s.badLineLocked(data[:64], fmt.Errorf("line longer than %d bytes", s.cfg.MaxLineBytes))
		}
		s.pos.Offset += int64(len(data))
		s.skipping = true
		data = nil
	}
	s.pending = append(s.pending[:0], data...)
}

func (s *LogSource) countLine(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	e, err := s.cfg.Parser.ParseLine(line)
	if err != nil {
		s.badLineLocked(line, err)
		return
	}
	s.stats.Parsed.Add(1)
	s.cfg.Recorder.Record(e.Status, e.Duration)
}

func (s *LogSource) badLine(line []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.badLineLocked(line, err)
}

func (s *LogSource) badLineLocked(line []byte, err error) {
	s.stats.Unparseable.Add(1)
	s.badLines.note(line, err)
}
