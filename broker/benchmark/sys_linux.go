//go:build linux

package benchmark

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, which the
// subscribers need (one descriptor each, on both sides), and returns it.
func raiseFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise file limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// raiseHardFileLimit raises the hard (and soft) file limit to n; only a
// privileged process may.
func raiseHardFileLimit(n uint64) error {
	lim := unix.Rlimit{Cur: n, Max: n}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the file limit to %d: %w", n, err)
	}
	return nil
}

// hardFileLimit is the most descriptors a process may raise itself to.
func hardFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get file limit: %w", err)
	}
	return lim.Max, nil
}

// processCPU is the CPU time of this process so far, user and system, all
// threads.
func processCPU() time.Duration {
	user, sys := processCPUSplit()
	return user + sys
}

// processCPUSplit is the user and system CPU time of this process so far.
func processCPUSplit() (user, sys time.Duration) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// procMemory is this process's resident set size (VmRSS), the parts of it
// backed by files (RssFile: the binary's code and data pages touched so
// far) and anonymous (RssAnon), and its thread count.
type procMemory struct {
	rss, file, anon uint64
	threads         int
}

func readProcMemory() (procMemory, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return procMemory{}, fmt.Errorf("read VmRSS: %w", err)
	}
	var m procMemory
	for _, f := range []struct {
		key string
		v   *uint64
	}{{"VmRSS", &m.rss}, {"RssFile", &m.file}, {"RssAnon", &m.anon}} {
		if *f.v, err = parseStatusKB(b, f.key); err != nil {
			return procMemory{}, err
		}
	}
	threads, err := parseStatusValue(b, "Threads")
	if err != nil {
		return procMemory{}, err
	}
	m.threads = int(threads)
	return m, nil
}

// parseStatusKB finds "<key>:   1234 kB" in /proc/<pid>/status.
func parseStatusKB(status []byte, key string) (uint64, error) {
	fields, err := statusFields(status, key)
	if err != nil {
		return 0, err
	}
	if len(fields) != 2 || string(fields[1]) != "kB" {
		return 0, fmt.Errorf("parse %s line: %q is not a size in kB", key, bytes.Join(fields, []byte(" ")))
	}
	kb, err := strconv.ParseUint(string(fields[0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s line: %w", key, err)
	}
	return kb << 10, nil
}

// parseStatusValue finds "<key>:   1234" in /proc/<pid>/status.
func parseStatusValue(status []byte, key string) (uint64, error) {
	fields, err := statusFields(status, key)
	if err != nil {
		return 0, err
	}
	if len(fields) != 1 {
		return 0, fmt.Errorf("parse %s line: %q is not a number", key, bytes.Join(fields, []byte(" ")))
	}
	v, err := strconv.ParseUint(string(fields[0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s line: %w", key, err)
	}
	return v, nil
}

// statusFields is the fields after "<key>:" in /proc/<pid>/status.
func statusFields(status []byte, key string) ([][]byte, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(key+":")); ok {
			return bytes.Fields(rest), nil
		}
	}
	return nil, fmt.Errorf("no %s line in /proc/self/status", key)
}

// userHZ is the unit of /proc/stat (sysconf(_SC_CLK_TCK), 100 on every
// Linux architecture Go supports).
const userHZ = 100

// readMachineCPU reads the machine's CPU times from /proc/stat.
func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseProcStat(b)
}

// parseProcStat sums the columns of the "cpu" line.
func parseProcStat(stat []byte) (machineCPU, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return machineCPU{}, fmt.Errorf("parse /proc/stat: first line %q", line)
	}
	var busy, steal uint64
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("parse /proc/stat: %w", err)
		}
		// Columns: user nice system idle iowait irq softirq steal guest
		// guest_nice; guest time is already counted in user.
		switch i {
		case 3, 4, 8, 9:
		case 7:
			steal += v
		default:
			busy += v
		}
	}
	tick := time.Second / userHZ
	return machineCPU{Busy: time.Duration(busy) * tick, Steal: time.Duration(steal) * tick}, nil
}
