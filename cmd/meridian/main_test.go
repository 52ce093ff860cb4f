package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"
)

func TestEveryFlagHasItsEnvVar(t *testing.T) {
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	check := func(where string, flags []cli.Flag) {
		for _, f := range flags {
			name := f.Names()[0]
			ev, ok := f.(interface{ GetEnvVars() []string })
			if !ok || len(ev.GetEnvVars()) != 1 || ev.GetEnvVars()[0] != envName(name) {
				t.Errorf("%s --%s: env vars %v, want [%s]", where, name, ev.GetEnvVars(), envName(name))
			}
		}
	}
	check("meridian", app.Flags)
	if len(app.Commands) < 9 {
		t.Fatalf("only %d commands", len(app.Commands))
	}
	for _, c := range app.Commands {
		check(c.Name, c.Flags)
	}
	if got := envName("nats-url"); got != "MERIDIAN_NATS_URL" {
		t.Fatalf("envName(nats-url) = %s", got)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range newApp(&bytes.Buffer{}, &bytes.Buffer{}).Commands {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"meridian", c.Name, "--help"}, &out, &errOut); code != 0 {
			t.Errorf("%s --help exited %d: %s", c.Name, code, errOut.String())
		}
		if !strings.Contains(out.String(), c.Usage) || !strings.Contains(out.String(), "OPTIONS") {
			t.Errorf("%s --help lacks its usage or options:\n%s", c.Name, out.String())
		}
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Setenv("MERIDIAN_INTERVAL", "61")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"meridian", "watch", "ws://127.0.0.1:1/ws/metrics"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "--interval 61") {
		t.Fatalf("MERIDIAN_INTERVAL=61 should be rejected as --interval 61; exit %d: %s", code, errOut.String())
	}
}

func TestBadFlagValuesGetClearErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"meridian", "--log-level", "loud", "watch"}, "--log-level"},
		{[]string{"meridian", "watch", "--metrics", "cpu", "ws://x"}, `unknown metric "cpu"`},
		{[]string{"meridian", "gateway", "--upstream", "not a url", "--region", "eu", "--instance", "a"}, "--upstream"},
		{[]string{"meridian", "gateway", "--upstream", "http://x", "--region", "e.u", "--instance", "a"}, "--region"},
		{[]string{"meridian", "nats", "--listen", "nohost"}, "--listen"},
		{[]string{"meridian", "dev", "--gateways", "eu"}, "--gateways"},
		{[]string{"meridian", "loadgen", "--target", "http://127.0.0.1:1", "--rps", "0"}, "rps"},
		{[]string{"meridian", "healthcheck"}, "one URL"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want non-zero and %q", tc.args[1:], code, errOut.String(), tc.want)
		}
	}
}

// asMainEnv makes the test binary run as the meridian binary, so that tests
// can start its roles as child processes without building it.
const asMainEnv = "MERIDIAN_SCALE_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, append([]string{"meridian"}, os.Args[1:]...), os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

// selfCommand runs the test binary as `meridian args...`.
func selfCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

// Usage errors exit 2 with one line naming the problem; runtime failures
// such as a port already in use exit 1, without usage text.
func TestExitCodes(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// Nothing answers here: the roles start connecting in the background
	// and fail on the port before any connection matters.
	noNATS := "nats://127.0.0.1:1"
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"negative edge timeout", []string{"meridian", "edge", "--idle-timeout", "-1s", "--nats-url", noNATS}, 2, "IdleTimeout -1s must not be negative"},
		{"negative aggregator ttl", []string{"meridian", "aggregator", "--export-ttl", "-1s", "--nats-url", noNATS}, 2, "ExportTTL -1s must not be negative"},
		{"negative gateway interval", []string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a",
			"--publish-interval", "-1s", "--nats-url", noNATS}, 2, "PublishInterval -1s must not be negative"},
		{"negative lame duck", []string{"meridian", "nats", "--lame-duck", "-1s", "--data-dir", t.TempDir()}, 2, "LameDuck -1s must not be negative"},
		{"edge port taken", []string{"meridian", "edge", "--anonymous", "--admin-listen", "127.0.0.1:0", "--listen", taken.Addr().String(), "--nats-url", noNATS}, 1, "address already in use"},
		{"edge admin port taken", []string{"meridian", "edge", "--anonymous", "--admin-listen", taken.Addr().String(), "--listen", "127.0.0.1:0", "--nats-url", noNATS}, 1, "--admin-listen"},
		{"gateway admin port taken", []string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a",
			"--listen", "127.0.0.1:0", "--admin-listen", taken.Addr().String(), "--nats-url", noNATS}, 1, "--admin-listen"},
		{"gateway proxy port taken", []string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a",
			"--listen", taken.Addr().String(), "--admin-listen", "127.0.0.1:0", "--nats-url", noNATS}, 1, "address already in use"},
		{"aggregator regions without region tier", []string{"meridian", "aggregator", "--regions", "eu", "--nats-url", noNATS}, 2, "--regions eu: only with --tier region"},
		{"aggregator region tier without regions", []string{"meridian", "aggregator", "--tier", "region", "--nats-url", noNATS}, 2, "--tier region needs --regions"},
		{"aggregator bad region", []string{"meridian", "aggregator", "--tier", "region", "--regions", "eu,us.west", "--nats-url", noNATS}, 2, `--regions: region "us.west" has character '.'`},
		{"aggregator bad tier", []string{"meridian", "aggregator", "--tier", "edge", "--nats-url", noNATS}, 2, `--tier: tier "edge": want all, region or cluster`},
		{"aggregator cluster deadline", []string{"meridian", "aggregator", "--tier", "cluster", "--cluster-deadline", "2s", "--nats-url", noNATS}, 2, "ClusterDeadline 2s"},
		{"aggregator admin port taken", []string{"meridian", "aggregator", "--listen", taken.Addr().String(), "--nats-url", noNATS}, 1, "address already in use"},
		{"nats metrics port taken", []string{"meridian", "nats", "--listen", "127.0.0.1:0", "--metrics-listen", taken.Addr().String(),
			"--data-dir", t.TempDir()}, 1, "--metrics-listen"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			msg := errOut.String()
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, msg, tc.code, tc.want)
			}
			if strings.Contains(msg, "USAGE") || strings.Contains(out.String(), "USAGE") {
				t.Errorf("usage text printed for a runtime or value error: %q", out.String()+msg)
			}
			if lines := strings.Count(strings.TrimSpace(lastLines(msg)), "\n"); lines != 0 {
				t.Errorf("error message spans %d lines: %q", lines+1, msg)
			}
		})
	}
}

// lastLines is the part of stderr written by run: the "meridian:" line.
func lastLines(s string) string {
	if i := strings.LastIndex(s, "meridian: "); i >= 0 {
		return s[i:]
	}
	return s
}

// The tier flags read MERIDIAN_TIER and MERIDIAN_REGIONS like every flag.
func TestAggregatorTierEnv(t *testing.T) {
	t.Setenv("MERIDIAN_TIER", "cluster")
	t.Setenv("MERIDIAN_REGIONS", "eu,us")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"meridian", "aggregator", "--nats-url", "nats://127.0.0.1:1"}, &out, &errOut)
	if want := "--regions eu,us: only with --tier region"; code != 2 || !strings.Contains(errOut.String(), want) {
		t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), want)
	}
}
